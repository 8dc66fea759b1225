"""A LightningDataModule over a chip store written by ``demgen prepare``.

:class:`ChipDataModule` takes its whole configuration as constructor arguments (so
LightningCLI can build it from a config file) and serves the store's train/val/test splits,
or one of its k spatial folds, as :class:`~demgen.data.chips.ChipDataset` batches::

    dm = ChipDataModule("landsat_chips", batch_size=16, num_workers=4)
    batch = next(iter(dm.train_dataloader()))
    batch["image"]   # (B, C, H, W) float32, normalized with the training statistics
    batch["target"]  # (B, 1, H, W) float32, normalized heights (0 where mask is False)
    batch["mask"]    # (B, 1, H, W) bool, True where the pixel is valid
    batch["offset"]  # (B,) float64 metres: dm.elevation_norm.inverse(target, offset) is metres

Normalization comes from the store's manifest, fitted there on the training split (of the
fold, with ``fold``). Only the training loader augments (a joint random flip/rotation of
image, target, mask and extra layers, drawn per chip by the dataset and applied to the whole
batch on its device after the transfer, see :mod:`demgen.data.augment`) and shuffles; val
and test are unaugmented and in store order, so they are deterministic. The training loader
uses ``shuffle=True`` rather than a custom sampler, so under DDP Lightning swaps in its
``DistributedSampler``.

The normalization dicts, bands and store path are in :meth:`state_dict`, which Lightning
saves in every checkpoint; a task can also copy :attr:`normalization` and :attr:`bands`
into its own hyperparameters.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from demgen.data.augment import apply_batch
from demgen.data.chips import ChipDataset, ChipStore
from demgen.errors import InputError


def manifest_pixel_size(manifest: dict[str, Any]) -> float | None:
    """The training data's pixel size in metres (geometric mean of x and y), or None.

    From ``manifest["pixel_size_m"]`` ([x, y] metres) where ``demgen prepare`` wrote it, else
    from each scene's grid (CRS, transform, size; :func:`demgen.io.geodesy.pixel_size_m`),
    averaged over scenes. Stores imported from ``.npz`` have no georeferencing: None, and
    ``demgen predict`` then cannot check the resolution of what it is given.
    """
    from demgen.io.geodesy import mean_pixel_size_m, pixel_size_m

    size = manifest.get("pixel_size_m")
    if size:
        xy = (float(size[0]), float(size[1])) if isinstance(size, list | tuple) else (size, size)
        return mean_pixel_size_m(xy)
    sizes = []
    for scene in manifest.get("scenes") or []:
        grid = scene.get("grid") or {}
        if not grid.get("crs") or not grid.get("transform"):
            continue
        from rasterio.transform import Affine

        xy = pixel_size_m(
            grid["crs"], Affine(*grid["transform"][:6]), grid["width"], grid["height"]
        )
        sizes.append(mean_pixel_size_m(xy))
    return sum(sizes) / len(sizes) if sizes else None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def auto_num_workers() -> int:
    """Loader worker processes for this machine: none when the model trains on the CPU, where
    workers take cores from the model and the in-process loader already outruns it (bench:
    about 880 augmented 256-px chips/s with 0 workers, 590 with 2, against 4-70 samples/s of
    training on 2 cores); with a GPU, one per free core up to 8, so the GPU never waits."""
    if not _cuda_available():
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus - 1))


class ChipDataModule(pl.LightningDataModule):
    """Train/val/test loaders over a chip store (or its fold ``fold``).

    Args:
        store: chip store folder written by ``demgen prepare``.
        batch_size: chips per batch (every loader).
        num_workers: DataLoader worker processes; ``auto`` (default): :func:`auto_num_workers`.
        augment: random rot90/flip of training chips (never of val/test).
        fold: use k-fold ``fold`` of the store (``--folds``): train, validate and test on
            that fold's train, val and test chips, with that fold's normalization (its val
            chips are blocks outside its test ground, see :func:`demgen.data.splits.kfold_split`,
            so early stopping and ``best.ckpt`` never see test data).
        extra: also yield the store's extra layers (``extra``, see ``ChipStore.extras``).
        inputs, targets: layer names of the store (``ChipStore.layers``: ``image``,
            ``elevation``, ``mask``, each extra layer) the batches serve as ``input`` and
            ``target`` (see :class:`~demgen.data.chips.ChipDataset`); default (None): image
            to elevation, today's batches. ``inputs=["elevation"], targets=["image"]``
            learns the image from the heights on the same store.
        augment_seed: None (default) draws augmentations from torch's RNG, so they differ
            every epoch and follow ``seed_everything``; an int fixes them per chip.
        pin_memory, persistent_workers, drop_last: passed to the training DataLoader
            (``drop_last`` only there); ``pin_memory=None`` (default) pins when a GPU is visible.
    """

    def __init__(
        self,
        store: str,
        batch_size: int = 8,
        num_workers: int | Literal["auto"] = "auto",
        augment: bool = True,
        fold: int | None = None,
        extra: bool = False,
        augment_seed: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        drop_last: bool = False,
        inputs: list[str] | None = None,
        targets: list[str] | None = None,
    ) -> None:
        super().__init__()
        # the roles stay out of the logged hparams, which Lightning merges with the task's
        # (RefineTask has ``inputs`` of its own); state_dict and the CLI config record them
        self.save_hyperparameters(ignore=["inputs", "targets"])
        self.store_path = str(store)
        self.batch_size = int(batch_size)
        self.num_workers = auto_num_workers() if num_workers == "auto" else int(num_workers)
        if pin_memory is None:  # page-locked batches only help a copy to a GPU
            pin_memory = _cuda_available()
        self.augment, self.fold, self.extra = bool(augment), fold, bool(extra)
        self.augment_seed = augment_seed
        self.pin_memory, self.drop_last = bool(pin_memory), bool(drop_last)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.store = ChipStore(self.store_path)
        if fold is not None:
            n = len(self.store.manifest.get("folds") or [])
            if not 0 <= fold < n:
                raise ValueError(f"{self.store_path}: no fold {fold} (the store has {n} folds)")
            if not self.store.manifest["folds"][fold].get("val"):
                raise InputError(
                    f"{self.store_path}: fold {fold} has no validation chips of its own (stores "
                    "prepared before demgen validated folds on their test chips); prepare it "
                    "again with --folds"
                )
        self.inputs = list(inputs) if inputs is not None else None
        self.targets = list(targets) if targets is not None else None
        for name in (self.inputs or []) + (self.targets or []):
            if name not in self.store.layers:
                raise InputError(f"{self.store_path}: no layer {name!r} "
                                 f"(layers: {', '.join(self.store.layers)})")  # fmt: skip
        self.datasets: dict[str, ChipDataset] = {}

    # what a task needs to save with its weights ---------------------------------------------

    @property
    def bands(self) -> list[str]:
        return self.store.bands

    @property
    def normalization(self) -> dict[str, Any]:
        """The stored normalization dicts (``image``, ``elevation``) used by every loader."""
        return self.store._norm_dicts(self.fold)

    @property
    def image_norm(self) -> Any:
        return self.store.image_norm(self.fold)

    @property
    def elevation_norm(self) -> Any:
        return self.store.elevation_norm(self.fold)

    @property
    def pixel_size(self) -> float | None:
        """Pixel size of the chips in metres (None for ungeoreferenced ``.npz`` stores);
        ``demgen fit`` links it into the task so ``demgen predict`` can refuse other
        resolutions."""
        return manifest_pixel_size(self.store.manifest)

    @property
    def vertical_crs(self) -> str:
        """The vertical datum of the store's heights, ``unknown`` where none was declared."""
        return str(self.store.manifest.get("vertical_crs") or "unknown")

    @property
    def in_channels(self) -> int:
        n_extra = len(self.store.extras) if self.extra and self.store.extra is not None else 0
        return len(self.bands) + n_extra

    # splits -----------------------------------------------------------------------------------

    def split_name(self, stage: str) -> str:
        """The store split behind ``stage`` ('train', 'val', 'test'): the same name, for the
        store and for a fold alike (a fold's val is its own, never its test chips)."""
        return stage

    def dataset(self, stage: str) -> ChipDataset:
        if stage not in self.datasets:
            train = stage == "train"
            self.datasets[stage] = ChipDataset(
                self.store,
                self.split_name(stage),
                fold=self.fold,
                augment=self.augment and train,
                seed=self.augment_seed,
                extra=self.extra,
                defer_augment=True,
                inputs=self.inputs,
                targets=self.targets,
            )
        return self.datasets[stage]

    def setup(self, stage: str | None = None) -> None:
        stages = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }
        for s in stages.get(stage or "", ("train", "val", "test")):
            self.dataset(s)

    def _loader(self, stage: str) -> DataLoader:
        train = stage == "train"
        return DataLoader(
            self.dataset(stage),
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=self.drop_last and train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches on their device: one batched op per flip/rotation (the
        named-roles ``input`` with the same codes as the other layers)."""
        if not isinstance(batch, dict):
            return batch
        if "input" in batch and "aug" in batch:
            batch["input"] = apply_batch({"image": batch["input"], "aug": batch["aug"]})["image"]
        return apply_batch(batch)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")

    # checkpoint -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Saved by Lightning in every checkpoint: store, fold, bands and normalization."""
        return {
            "store": self.store_path,
            "fold": self.fold,
            "bands": self.bands,
            "normalization": self.normalization,
            "extras": self.store.extras if self.extra else [],
            "inputs": self.inputs,
            "targets": self.targets,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Refuse to resume on a store whose bands or normalization differ from the checkpoint."""
        for key in ("bands", "normalization"):
            if key in state and state[key] != self.state_dict()[key]:
                raise ValueError(
                    f"{self.store_path}: {key} differ from the checkpoint's "
                    f"(trained on {state.get('store')})"
                )
