"""A chip-store DataModule that makes its own data: a synthetic world, prepared once and cached.

:class:`SynthWorldDataModule` is what makes ``demgen fit --config configs/quick.yaml`` work on
a fresh clone: on construction it looks for a chip store built from exactly its settings under
``cache_dir`` and, when absent, synthesizes a world (:func:`~demgen.data.synth.generate_world`)
and prepares it (:func:`~demgen.data.prepare.prepare_rasters`) there. From then on it is a
:class:`~demgen.data.datamodule.ChipDataModule` over that store.

The cache folder is named by a hash of the settings that shape the data, so changing a size
builds a new store instead of silently reusing a stale one. Building happens under a file lock
and is renamed into place at the end, so several DDP ranks (or an interrupted run) never see a
half-written store. It is done in the constructor rather than in ``prepare_data`` because the
task needs the store's normalization statistics before the trainer starts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from demgen.data.datamodule import ChipDataModule
from demgen.data.prepare import PrepareConfig, prepare_rasters
from demgen.data.synth import SceneConfig, generate_world


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_synth_store(
    cache_dir: str | Path,
    scene: SceneConfig,
    n_scenes: int,
    prepare: PrepareConfig,
    *,
    target: str = "dtm",
    log: Any = None,
) -> Path:
    """The chip store for ``(scene, n_scenes, prepare, target)`` under ``cache_dir``; built
    (world + prepare) when absent. Returns ``cache_dir/synth_<hash>/store``."""
    if target not in ("dtm", "dsm"):
        raise ValueError(f"target must be dtm or dsm, got {target!r}")
    settings = {
        "scene": asdict(scene),
        "n_scenes": n_scenes,
        "prepare": asdict(prepare),
        "target": target,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    root = Path(cache_dir) / f"synth_{key[:10]}"
    store = root / "store"
    if (store / "manifest.json").exists():
        return store
    with _locked(Path(cache_dir) / f".synth_{key[:10]}.lock"):
        if (store / "manifest.json").exists():  # another rank built it while we waited
            return store
        tmp = Path(cache_dir) / f".synth_{key[:10]}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            if log:
                log(f"synthesizing {n_scenes} scenes of {scene.size} px into {root}")
            world = generate_world(tmp / "world", n_scenes, scene)
            if log:
                log(f"preparing {prepare.chip_size}-px chips ({target}) into {store}")
            prepare_rasters(
                [w / "image.tif" for w in world], [w / f"{target}.tif" for w in world],
                tmp / "store", prepare,
            )  # fmt: skip
            (tmp / "settings.json").write_text(json.dumps(settings, indent=2, default=str))
            if root.exists():
                shutil.rmtree(root)
            tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return store


def _log(msg: str) -> None:
    print(f"[demgen fit] {msg}", flush=True)


class SynthWorldDataModule(ChipDataModule):
    """A :class:`ChipDataModule` over a synthetic world it synthesizes and prepares itself.

    Args:
        cache_dir: folder holding cached stores (one per distinct setting), default
            ``runs/cache`` relative to the working directory.
        n_scenes: synthetic scenes in the world (split spatially into train/val/test).
        size, relief, pixel_size, seed: each scene's :class:`~demgen.data.synth.SceneConfig`.
        target: which elevation the chips carry: ``dtm`` (bare earth) or ``dsm`` (surface).
        chip_size, normalize, image_normalize, fractions, block: as ``demgen prepare``.
        batch_size, num_workers, augment, augment_seed, drop_last, inputs, targets: as
            :class:`ChipDataModule` (``inputs``/``targets``: the layers learnt from and to).
    """

    def __init__(
        self,
        cache_dir: str = "runs/cache",
        n_scenes: int = 3,
        size: int = 256,
        relief: str = "hills",
        pixel_size: float = 10.0,
        seed: int = 0,
        target: str = "dtm",
        chip_size: int = 64,
        normalize: str = "global",
        image_normalize: str = "percentile",
        fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        block: int = 2,
        batch_size: int = 8,
        num_workers: int | Literal["auto"] = "auto",
        augment: bool = True,
        augment_seed: int | None = None,
        drop_last: bool = False,
        inputs: list[str] | None = None,
        targets: list[str] | None = None,
    ) -> None:
        scene = SceneConfig(size=size, seed=seed, relief=relief, pixel_size=pixel_size)
        prep = PrepareConfig(
            chip_size=chip_size,
            normalize=normalize,
            image_normalize=image_normalize,
            fractions=tuple(fractions),
            block=block,
            seed=seed,
        )
        store = build_synth_store(cache_dir, scene, n_scenes, prep, target=target, log=_log)
        super().__init__(
            str(store),
            batch_size=batch_size,
            num_workers=num_workers,
            augment=augment,
            augment_seed=augment_seed,
            drop_last=drop_last,
            inputs=inputs,
            targets=targets,
        )
