"""Spatially blocked train/val/test splits (and k folds) that do not leak ground.

Neighbouring chips look alike, so a random split of chips from one scene measures
memorisation. Chips are grouped into square blocks of ``block`` x ``block`` chips; whole
blocks are dealt to the splits (shuffled by ``seed``, filled greedily to the target
fractions by chip count); then every val/test chip whose footprint comes closer than
``buffer`` chip widths to a training chip's footprint is excluded (split ``excluded``), so no
evaluation chip shares ground, or a buffer of one chip by default, with a training chip.
Footprints are compared on the ground (chip bounds in one CRS), so chips of overlapping
scenes are handled too. Chips without georeferencing are each their own block, no buffer.

In k folds (:func:`kfold_split`) each fold also has its own val split, dealt from the blocks
outside its test group and buffered from both train and test, so that model selection
(early stopping, LR schedule, ``best.ckpt``) never looks at the fold's test data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")
#: Share of a fold's non-test chips that validates it (whole blocks, see :func:`kfold_split`).
FOLD_VAL_FRACTION = 0.15


@dataclass
class ChipPlace:
    """Where a chip lies: its scene, its block key and its ground bounds (or None)."""

    scene: int
    block: tuple[int, int, int]
    bounds: tuple[float, float, float, float] | None  # left, bottom, right, top (common CRS)


def block_keys(
    scenes: Sequence[int], rows: Sequence[int], cols: Sequence[int], chip: int, block: int
) -> list[tuple[int, int, int]]:
    """Block of each chip: (scene, row // (block*chip), col // (block*chip)) in pixels."""
    span = block * chip
    return [
        (int(s), int(r) // span, int(c) // span) for s, r, c in zip(scenes, rows, cols, strict=True)
    ]


def _deal(keys: list[tuple], fractions: Sequence[float], seed: int) -> np.ndarray:
    """Assign whole blocks to len(fractions) groups, by chip count, deterministically."""
    uniq = sorted(set(keys))
    sizes = {k: 0 for k in uniq}
    for k in keys:
        sizes[k] += 1
    rng = np.random.default_rng(seed)
    order = [uniq[i] for i in rng.permutation(len(uniq))]
    target = np.asarray(fractions, float) / np.sum(fractions) * len(keys)
    have = np.zeros(len(fractions))
    group_of: dict[tuple, int] = {}
    # Make sure every group with a non-zero fraction gets a block when there are enough.
    for g in np.argsort(-target):
        if target[g] > 0 and len(group_of) < len(order):
            k = order[len(group_of)]
            group_of[k] = int(g)
            have[g] += sizes[k]
    for k in order[len(group_of) :]:
        g = int(np.argmax(target - have))
        group_of[k] = g
        have[g] += sizes[k]
    return np.array([group_of[k] for k in keys], dtype=np.int64)


def _too_close(
    bounds: np.ndarray, a_idx: np.ndarray, b_idx: np.ndarray, gap: np.ndarray
) -> np.ndarray:
    """For each chip in ``a_idx``: is any chip of ``b_idx`` closer than ``gap[a]`` on the ground?"""
    out = np.zeros(len(a_idx), bool)
    if len(b_idx) == 0:
        return out
    b = bounds[b_idx]
    for n, i in enumerate(a_idx):
        a = bounds[i]
        dx = np.maximum(0.0, np.maximum(b[:, 0] - a[2], a[0] - b[:, 2]))
        dy = np.maximum(0.0, np.maximum(b[:, 1] - a[3], a[1] - b[:, 3]))
        out[n] = bool(np.any(np.maximum(dx, dy) < gap[i] * (1 - 1e-6)))
    return out


def blocked_split(
    places: Sequence[ChipPlace],
    *,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    buffer: float = 1.0,
    tries: int = 32,
) -> dict[str, list[int]]:
    """Spatially blocked train/val/test split with a buffer; returns chip indices per split.

    Chips excluded by the buffer are listed under ``excluded``. Since where the val/test
    blocks fall decides how many chips the buffer costs, ``tries`` block deals (all derived
    from ``seed``, so the result is deterministic) are compared and the one that keeps val
    and test closest to their target sizes wins. With no ground bounds (chips without
    georeferencing) each chip is its own block and no buffer applies.
    """
    keys = _keys(places)
    if not places:
        return {s: [] for s in (*SPLITS, "excluded")}
    target = np.asarray(fractions, float) / np.sum(fractions) * len(places)
    best, best_score = None, None
    for t in range(tries if buffer > 0 else 1):
        group = _deal(keys, fractions, seed * 1_000_003 + t)
        out = _apply_buffer(
            places, {s: np.flatnonzero(group == g) for g, s in enumerate(SPLITS)}, buffer
        )
        ratios = [min(1.0, len(out[s]) / target[g]) for g, s in enumerate(SPLITS) if target[g] > 0]
        score = (min(ratios), sum(ratios), -len(out["excluded"]))
        if best_score is None or score > best_score:
            best, best_score = out, score
    assert best is not None
    return best


def _apply_buffer(
    places: Sequence[ChipPlace], groups: dict[str, np.ndarray], buffer: float
) -> dict[str, list[int]]:
    out = {k: v.tolist() for k, v in groups.items()}
    out["excluded"] = []
    geo = [i for i, p in enumerate(places) if p.bounds is not None]
    if not geo or buffer <= 0:
        return out
    bounds = np.full((len(places), 4), np.nan)
    for i in geo:
        bounds[i] = places[i].bounds
    width = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
    gap = buffer * width
    train = np.array([i for i in groups["train"] if places[i].bounds is not None], np.int64)
    for s in groups:
        if s == "train":
            continue
        idx = np.array([i for i in groups[s] if places[i].bounds is not None], np.int64)
        close = _too_close(bounds, idx, train, gap)
        drop = set(idx[close].tolist())
        out[s] = [i for i in out[s] if i not in drop]
        out["excluded"].extend(sorted(drop))
    out["excluded"].sort()
    return out


def kfold_split(
    places: Sequence[ChipPlace],
    k: int,
    *,
    seed: int = 0,
    buffer: float = 1.0,
    val_fraction: float = FOLD_VAL_FRACTION,
    tries: int = 32,
) -> list[dict[str, list[int]]]:
    """k spatially blocked folds, each with its own train/val/test.

    Blocks are dealt to k groups once; fold i tests on group i. Its validation chips (what
    early stopping, the LR schedule and ``best.ckpt`` are chosen on) are never test chips:
    they are whole blocks, about ``val_fraction`` of the chips, taken from the other groups'
    blocks, and the fold trains on the remaining blocks. The buffer then excludes every val or
    test chip closer than ``buffer`` chip widths to a training chip, and every val chip that
    close to a test chip, so model selection never sees the test ground or its surroundings
    (listed under ``excluded``). As in :func:`blocked_split`, ``tries`` deals of the val blocks,
    all derived from ``seed`` and ``i``, are compared and the one keeping val closest to its
    target size wins: the folds are deterministic.
    """
    keys = _keys(places)
    group = _deal(keys, [1.0] * k, seed)
    folds = []
    for i in range(k):
        test, rest = np.flatnonzero(group == i), np.flatnonzero(group != i)
        target = val_fraction * len(rest)
        best, best_score = None, None
        for t in range(tries if buffer > 0 and val_fraction > 0 else 1):
            fractions = (1.0 - val_fraction, val_fraction)
            sub = _deal([keys[j] for j in rest], fractions, (seed * 1_000_003 + i) * 7919 + t)
            groups = {"train": rest[sub == 0], "val": rest[sub == 1], "test": test}
            out = _apply_buffer(places, groups, buffer)
            _buffer_val_from_test(places, out, buffer)
            score = (min(1.0, len(out["val"]) / target) if target else 1.0, -len(out["excluded"]))
            if best_score is None or score > best_score:
                best, best_score = out, score
        assert best is not None
        folds.append(best)
    return folds


def _keys(places: Sequence[ChipPlace]) -> list[tuple[int, int, int]]:
    """Block key of each chip; an ungeoreferenced chip is its own block."""
    return [p.block if p.bounds is not None else (p.scene, -1, i) for i, p in enumerate(places)]


def _buffer_val_from_test(
    places: Sequence[ChipPlace], out: dict[str, list[int]], buffer: float
) -> None:
    """Move the val chips closer than ``buffer`` chip widths to a test chip to ``excluded``."""
    val = np.array([i for i in out["val"] if places[i].bounds is not None], np.int64)
    test = np.array([i for i in out["test"] if places[i].bounds is not None], np.int64)
    if buffer <= 0 or not len(val) or not len(test):
        return
    bounds = np.full((len(places), 4), np.nan)
    for i in np.concatenate([val, test]):
        bounds[i] = places[i].bounds
    width = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
    drop = set(val[_too_close(bounds, val, test, buffer * width)].tolist())
    out["val"] = [i for i in out["val"] if i not in drop]
    out["excluded"] = sorted([*out["excluded"], *drop])


def choose_block(n_rows: int, n_cols: int, block: int, min_blocks: int = 6) -> int:
    """Shrink ``block`` (chips per side) until n_rows x n_cols chips make ``min_blocks`` blocks."""
    b = max(1, block)
    while b > 1 and (-(-n_rows // b)) * (-(-n_cols // b)) < min_blocks:
        b -= 1
    return b
