"""Per-scene climate: the elevation lines of land cover, drawn from the seed.

Land cover follows elevation (crops and towns in the lowlands, forest up to the tree line,
bare rock above it, permanent snow above the snow line), so if those lines sat at fixed
heights the colour of a pixel would tell its absolute height and a model could read height
from colour instead of relief. Real lines move a lot with latitude, continentality and
aspect: the tree line lies near sea level in the subarctic and above 4000 m in the tropical
Andes; the Alps' is at about 1800 to 2300 m with the climatic snow line some 700 to 1000 m
higher (Koerner 2012, *Alpine Treelines*, ch. 2 and 4; Ohmura et al. 1992, J. Glaciol. 38,
for equilibrium-line altitudes). So each scene draws its own climate, and the lines are placed
*relative to the scene's own nominal height range* ``(lo, hi)`` (``SceneConfig.elevation_range``,
span ``hi - lo``): the same colour then means different heights in different scenes, while
within a scene land cover still follows the drawn lines.

Documented ranges (uniform draws; fractions of the span above ``lo`` unless stated):

=================  ==================================================================
``tree_line_m``    ``lo + [0.35, 1.05] x span`` (above ``hi`` in some scenes: no tree line)
``snow_line_m``    ``tree_line_m + [0.15, 0.50] x span`` (the Alps: about 0.2 to 0.3 of
                   a 3800 m span above the tree line)
``rock_line_m``    ``tree_line_m + [0.05, 0.20] x span``: bare rock above it at any slope
``farm_line_m``    ``tree_line_m - [0.15, 0.35] x span``: crops only below it
``town_line_m``    ``farm_line_m - [0.00, 0.10] x span``: towns only below it
``line_noise_m``   ``0.08 x span`` (fixed): amplitude of the lines' along-slope wobble
``haze_factor``    ``[0.5, 1.5]`` (no unit): the scene's aerosol load relative to
                   ``SceneConfig.haze``, so path radiance (which falls with height) does not
                   give absolute height either; the same 0.5 to 1.5 spread the time series
                   draws per date (:func:`demgen.data.synth.seasons.date_weather`)
=================  ==================================================================

A scene's climate is stored in its ``scene.json`` (``climate``) and in its resolved config;
``SceneConfig.climate`` set by hand overrides the draw (every scene of a world then shares it).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields
from typing import Any

from demgen.data.synth.noise import mix_key
from demgen.errors import InputError

# (low, high) of each uniform draw, as fractions of the scene's span (see the module docstring)
TREE_LINE_FRACTION = (0.40, 1.40)
SNOW_ABOVE_TREE = (0.10, 0.40)
ROCK_ABOVE_TREE = (0.05, 0.20)
FARM_BELOW_TREE = (0.05, 0.20)
TOWN_BELOW_FARM = (0.00, 0.05)
LINE_NOISE_FRACTION = 0.08
HAZE_FACTOR = (0.5, 1.5)


@dataclass(frozen=True)
class Climate:
    """The elevation lines (metres) and aerosol factor one scene's land cover follows."""

    tree_line_m: float
    snow_line_m: float
    rock_line_m: float
    farm_line_m: float
    town_line_m: float
    line_noise_m: float
    haze_factor: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Climate:
        """Build from ``scene.json``'s ``climate`` (or ``SceneConfig.climate``); InputError on
        a missing, unknown or non-finite value."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in d]
        unknown = sorted(set(d) - set(names))
        if missing or unknown:
            raise InputError(
                f"climate needs exactly {', '.join(names)} (missing {missing}, unknown {unknown})"
            )
        try:
            values = {n: float(d[n]) for n in names}
        except (TypeError, ValueError) as exc:
            raise InputError(f"climate values must be numbers ({exc})") from None
        bad = [n for n, v in values.items() if not math.isfinite(v)]
        if bad:
            raise InputError(f"climate values must be finite: {', '.join(bad)}")
        if values["line_noise_m"] < 0 or values["haze_factor"] < 0:
            raise InputError("climate line_noise_m and haze_factor must be >= 0")
        return cls(**values)


def draw_climate(seed: int, elevation_range: tuple[float, float]) -> Climate:
    """The climate of scene ``seed`` with nominal heights ``elevation_range`` (deterministic:
    a hash of the seed drives the draws, so the same seed gives the same lines)."""
    lo, hi = float(elevation_range[0]), float(elevation_range[1])
    span = hi - lo
    rng = random.Random(mix_key(seed, "climate"))

    def u(bounds: tuple[float, float]) -> float:
        return rng.uniform(*bounds)

    tree = lo + u(TREE_LINE_FRACTION) * span
    snow = tree + u(SNOW_ABOVE_TREE) * span
    rock = tree + u(ROCK_ABOVE_TREE) * span
    farm = tree - u(FARM_BELOW_TREE) * span
    town = farm - u(TOWN_BELOW_FARM) * span
    return Climate(
        tree_line_m=round(tree, 3),
        snow_line_m=round(snow, 3),
        rock_line_m=round(rock, 3),
        farm_line_m=round(farm, 3),
        town_line_m=round(town, 3),
        line_noise_m=round(LINE_NOISE_FRACTION * span, 3),
        haze_factor=round(u(HAZE_FACTOR), 4),
    )
