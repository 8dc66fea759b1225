"""LightningDataModules over a time store, and one that synthesizes its own time series.

:class:`TimeDataModule` serves a time store's splits (:mod:`demgen.data.time_datasets`):
``mode="pairs"`` the ``(day 0, t)`` pairs of temporal synthesis, ``mode="frames"`` the dated
chips a segmentation model trains on. Like :class:`~demgen.data.datamodule.ChipDataModule`
it exposes what ``demgen fit`` links into a task: ``normalization`` (``image``; no
elevation), ``pixel_size``, ``vertical_crs``, and ``store`` (its manifest's ``chip_size`` and
``image_dtype``).

:class:`SynthTimeSeriesDataModule` makes the temporal recipes self-contained: it
synthesizes a time-series world (:func:`~demgen.data.synth.timeseries.generate_time_series_world`)
and builds its time store under ``cache_dir`` the first time (named by a hash of the
settings, under a file lock, renamed into place), then reuses it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from demgen.data.synth_datamodule import _locked, _log
from demgen.data.time_datasets import TimeFrameDataset, TimePairDataset
from demgen.data.timestore import TimeStore, build_time_store
from demgen.errors import InputError

MODES = ("pairs", "frames")


class TimeDataModule(pl.LightningDataModule):
    """Train/val/test loaders over a time store.

    Args:
        store: a time store folder (:func:`~demgen.data.timestore.build_time_store`).
        mode: ``pairs`` (temporal synthesis) or ``frames`` (segmentation on true images).
        batch_size, num_workers: as usual (0 workers: the store is memory-mapped).
        augment: a joint random flip/rotation of training items (never of val/test).
    """

    def __init__(
        self,
        store: str,
        mode: Literal["pairs", "frames"] = "pairs",
        batch_size: int = 8,
        num_workers: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        self.save_hyperparameters()
        self.store_path = str(store)
        self.store = TimeStore(store)
        self.mode, self.batch_size = mode, int(batch_size)
        self.num_workers, self.augment = int(num_workers), bool(augment)
        self.datasets: dict[str, TimePairDataset] = {}

    @property
    def bands(self) -> list[str]:
        return self.store.bands

    @property
    def normalization(self) -> dict[str, Any]:
        """The image normalization (``image``); a time store keeps no heights."""
        return {"image": self.store.manifest["normalization"]["image"], "elevation": None}

    @property
    def pixel_size(self) -> float | None:
        px = self.store.manifest.get("pixel_size_m")
        return float(px[0]) if px else None

    @property
    def vertical_crs(self) -> str:
        return "unknown"

    def dataset(self, stage: str) -> TimePairDataset:
        if stage not in self.datasets:
            cls = TimePairDataset if self.mode == "pairs" else TimeFrameDataset
            self.datasets[stage] = cls(self.store, stage, augment=self.augment and stage == "train")
        return self.datasets[stage]

    def _loader(self, stage: str) -> DataLoader:
        ds = self.dataset(stage)
        if len(ds) == 0:
            raise InputError(f"{self.store_path}: the {stage} split has no {self.mode}")
        return DataLoader(ds, batch_size=self.batch_size, shuffle=stage == "train",
                          num_workers=self.num_workers)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the store, its bands and normalization."""
        return {"store": self.store_path, "mode": self.mode, "bands": self.bands,
                "normalization": self.normalization}  # fmt: skip


def build_synth_time_store(
    cache_dir: str | Path, settings: dict[str, Any], log: Any = None
) -> Path:
    """The time store of a synthetic time-series world for ``settings`` (scene, series and
    store arguments), built under ``cache_dir`` when absent; returns its path."""
    from demgen.data.synth import SceneConfig
    from demgen.data.synth.timeseries import TimeSeriesConfig, generate_time_series_world

    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(cache_dir) / f"synthtime_{key}"
    store = root / "store"
    if (store / "manifest.json").exists():
        return store
    with _locked(Path(cache_dir) / f".synthtime_{key}.lock"):
        if (store / "manifest.json").exists():
            return store
        tmp = Path(cache_dir) / f".synthtime_{key}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            s = settings
            if log:
                log(f"synthesizing {s['n_scenes']} time series of {s['times']} dates into {root}")
            scene = SceneConfig(size=s["size"], seed=s["seed"], relief=s["relief"],
                                pixel_size=s["pixel_size"])  # fmt: skip
            ts = TimeSeriesConfig(
                times=s["times"], months_between=s["months_between"],
                cloud_cover=s["cloud_cover"], urban_rate=s["urban_rate"],
                road_rate=s.get("road_rate", 0.01),
            )  # fmt: skip
            places = generate_time_series_world(tmp / "series", s["n_scenes"], scene, ts)
            if log:
                log(f"building the time store ({s['chip_size']}-px chips) into {store}")
            build_time_store(places, tmp / "store", chip_size=s["chip_size"], block=s["block"],
                             fractions=tuple(s["fractions"]), seed=s["seed"])  # fmt: skip
            (tmp / "settings.json").write_text(json.dumps(settings, indent=2))
            if root.exists():
                shutil.rmtree(root)
            tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return store


class SynthTimeSeriesDataModule(TimeDataModule):
    """A :class:`TimeDataModule` over a synthetic time-series world it makes itself.

    Args:
        cache_dir: folder of cached stores (one per distinct setting).
        n_scenes, size, relief, pixel_size, seed: the scenes (seeds ``seed + i``).
        times, months_between, cloud_cover, urban_rate, road_rate: the time axis
            (:class:`~demgen.data.synth.timeseries.TimeSeriesConfig`).
        chip_size, block, fractions: the store (spatially blocked split of locations).
        mode, batch_size, num_workers, augment: as :class:`TimeDataModule`.
    """

    def __init__(self, cache_dir: str = "runs/cache", n_scenes: int = 6, size: int = 256,
                 relief: str = "hills", pixel_size: float = 10.0, seed: int = 1,
                 times: int = 8, months_between: int = 3, cloud_cover: float = 0.2,
                 urban_rate: float = 0.05, road_rate: float = 0.01, chip_size: int = 64,
                 block: int = 2,
                 fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                 mode: Literal["pairs", "frames"] = "pairs", batch_size: int = 8,
                 num_workers: int = 0, augment: bool = True) -> None:  # fmt: skip
        settings = {
            "n_scenes": n_scenes, "size": size, "relief": relief, "pixel_size": pixel_size,
            "seed": seed, "times": times, "months_between": months_between,
            "cloud_cover": cloud_cover, "urban_rate": urban_rate, "road_rate": road_rate,
            "chip_size": chip_size,
            "block": block, "fractions": list(fractions),
        }  # fmt: skip
        store = build_synth_time_store(cache_dir, settings, log=_log)
        super().__init__(str(store), mode=mode, batch_size=batch_size,
                         num_workers=num_workers, augment=augment)  # fmt: skip


__all__ = [
    "MODES",
    "SynthTimeSeriesDataModule",
    "TimeDataModule",
    "build_synth_time_store",
]
