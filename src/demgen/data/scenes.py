"""Scenes held in memory and sampled as chips: the demo's input path.

A scene is an image raster plus an elevation raster on the same grid. Training
draws random chips with joint flips and 90-degree rotations; validation uses a
fixed grid. Arrays are read once, so no chip ever opens a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from demgen.data.augment import apply_batch, draw_code
from demgen.data.normalize import ElevationNorm, ImageNorm
from demgen.errors import InputError
from demgen.io.raster import read_raster, same_grid


@dataclass
class Scene:
    """An image (bands, H, W) in stored DNs, heights (H, W) in metres, and a validity mask."""

    name: str
    image: np.ndarray
    height: np.ndarray
    valid: np.ndarray
    profile: dict[str, Any]
    bands: list[str]


def load_scene(
    scene_dir: str | Path, *, image: str = "image.tif", target: str = "dtm.tif"
) -> Scene:
    """Read a scene folder's image and target rasters; they must share one grid."""
    scene_dir = Path(scene_dir)
    img, iprof = read_raster(scene_dir / image)
    dem, dprof = read_raster(scene_dir / target, dtype=np.float32)
    if not same_grid(iprof, dprof):
        raise InputError(f"{scene_dir}: {image} and {target} are not on the same grid")
    height = dem[0]
    valid = np.isfinite(height)
    if dprof.get("nodata") is not None:
        valid &= height != dprof["nodata"]
    if iprof.get("nodata") is not None:
        valid &= np.all(img != iprof["nodata"], axis=0)
    bands = [d or f"band{i + 1}" for i, d in enumerate(iprof["descriptions"])]
    return Scene(scene_dir.name, img, height, valid, iprof, bands)


def fit_norms(scenes: list[Scene], max_pixels: int = 2_000_000, seed: int = 0):
    """Fit image and elevation normalizations on the valid pixels of training scenes only."""
    rng = np.random.default_rng(seed)
    pix, hts = [], []
    per_scene = max(1, max_pixels // len(scenes))
    for s in scenes:
        idx = np.flatnonzero(s.valid.ravel())
        take = rng.choice(idx, size=min(per_scene, idx.size), replace=False)
        pix.append(s.image.reshape(s.image.shape[0], -1)[:, take])
        hts.append(s.height.ravel()[s.valid.ravel()])
    image_norm = ImageNorm.fit(np.concatenate(pix, axis=1), scenes[0].bands)
    elevation_norm = ElevationNorm.fit(np.concatenate(hts))
    return image_norm, elevation_norm


class SceneChips(Dataset):
    """Chips of normalized image, normalized height and mask, cut from in-memory scenes.

    ``random=True`` draws ``length`` random windows and a flip/rotation for each, returned
    as ``aug`` for :func:`~demgen.data.augment.apply_batch` (training);
    ``random=False`` tiles each scene on a fixed, non-overlapping grid (validation).
    """

    def __init__(
        self,
        scenes: list[Scene],
        image_norm: ImageNorm,
        elevation_norm: ElevationNorm,
        chip_size: int,
        *,
        random: bool,
        length: int = 0,
        seed: int = 0,
    ) -> None:
        for s in scenes:
            if min(s.height.shape) < chip_size:
                raise InputError(f"scene {s.name} is smaller than the chip size {chip_size}")
        self.scenes = scenes
        self.image_norm = image_norm
        self.elevation_norm = elevation_norm
        self.chip = chip_size
        self.random = random
        self.seed = seed
        self.epoch = 0
        if random:
            self.length = length
        else:
            self.grid = [
                (si, r, c)
                for si, s in enumerate(scenes)
                for r in range(0, s.height.shape[0] - chip_size + 1, chip_size)
                for c in range(0, s.height.shape[1] - chip_size + 1, chip_size)
            ]
            self.length = len(self.grid)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c = self.chip
        if self.random:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            si = int(rng.integers(len(self.scenes)))
            h, w = self.scenes[si].height.shape
            r, col = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
            code = draw_code(rng)
        else:
            si, r, col = self.grid[i]
        s = self.scenes[si]
        win = (slice(r, r + c), slice(col, col + c))
        img, hgt, val = s.image[(slice(None), *win)], s.height[win], s.valid[win]
        x = self.image_norm.apply(img.astype(np.float32))
        y = self.elevation_norm.forward(np.where(val, hgt, self.elevation_norm.vmin))
        out = {
            "image": torch.from_numpy(np.asarray(x, np.float32)),
            "target": torch.from_numpy(np.asarray(y, np.float32))[None],
            "mask": torch.from_numpy(np.ascontiguousarray(val))[None],
        }
        if self.random:  # the flip/rotation is applied to the batch (apply_batch)
            out["aug"] = torch.tensor(code)
        return out


class SceneDataModule(L.LightningDataModule):
    """Training and validation chips from in-memory scenes, normalized with training stats."""

    def __init__(
        self,
        train: list[Scene],
        val: list[Scene],
        *,
        chip_size: int = 128,
        batch_size: int = 16,
        samples_per_epoch: int = 512,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not train or not val:
            raise InputError("need at least one training and one validation scene")
        self.image_norm, self.elevation_norm = fit_norms(train, seed=seed)
        self.train_set = SceneChips(
            train,
            self.image_norm,
            self.elevation_norm,
            chip_size,
            random=True,
            length=samples_per_epoch,
            seed=seed,
        )
        self.val_set = SceneChips(
            val, self.image_norm, self.elevation_norm, chip_size, random=False
        )
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        # A new random draw each epoch: Lightning calls this once per epoch when
        # reload_dataloaders_every_n_epochs=1; bump the epoch seed here.
        self.train_set.epoch += 1
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Flip/rotate training batches on their device, as drawn per chip."""
        return apply_batch(batch) if isinstance(batch, dict) else batch

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_set) / self.batch_size)
