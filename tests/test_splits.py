"""Spatially blocked splits: disjoint, buffered, deterministic; k folds."""

import numpy as np
import pytest

from demgen.data.splits import ChipPlace, blocked_split, kfold_split

CHIP = 64  # pixels
PX = 10.0  # metres


def grid_places(rows=12, cols=14, block=3):
    places = []
    for r in range(rows):
        for c in range(cols):
            x0, y0 = c * CHIP * PX, -r * CHIP * PX
            bounds = (x0, y0 - CHIP * PX, x0 + CHIP * PX, y0)
            places.append(ChipPlace(0, (0, r // block, c // block), bounds))
    return places


def gap(a, b):
    dx = max(0.0, b[0] - a[2], a[0] - b[2])
    dy = max(0.0, b[1] - a[3], a[1] - b[3])
    return max(dx, dy)


def assert_buffered(places, split, keys=("val", "test")):
    for k in keys:
        for i in split[k]:
            for j in split["train"]:
                assert gap(places[i].bounds, places[j].bounds) >= CHIP * PX - 1e-6, (k, i, j)


def test_blocked_split_is_disjoint_buffered_and_complete():
    places = grid_places()
    split = blocked_split(places, seed=3)
    sets = [set(split[k]) for k in ("train", "val", "test", "excluded")]
    assert sum(map(len, sets)) == len(places) == len(set().union(*sets))
    assert_buffered(places, split)
    n = len(places)
    assert 0.5 * n < len(split["train"]) < 0.85 * n
    assert len(split["val"]) > 0.05 * n and len(split["test"]) > 0.05 * n


def test_split_is_deterministic_by_seed():
    places = grid_places()
    assert blocked_split(places, seed=7) == blocked_split(places, seed=7)
    assert blocked_split(places, seed=7) != blocked_split(places, seed=8)


def test_whole_blocks_stay_together_before_the_buffer():
    places = grid_places()
    split = blocked_split(places, seed=1, buffer=0)
    assert split["excluded"] == []
    side = {i: k for k in ("train", "val", "test") for i in split[k]}
    by_block = {}
    for i, p in enumerate(places):
        by_block.setdefault(p.block, set()).add(side[i])
    assert all(len(v) == 1 for v in by_block.values())


@pytest.mark.parametrize("k", [4])
def test_kfold_tests_each_block_once(k):
    places = grid_places()
    folds = kfold_split(places, k, seed=0)
    tested = [i for f in folds for i in f["test"]]
    assert len(tested) == len(set(tested))  # no chip is tested twice
    for f in folds:
        parts = [set(f[s]) for s in ("train", "val", "test", "excluded")]
        assert sum(map(len, parts)) == len(places) == len(set().union(*parts))
        assert_buffered(places, f, keys=("val", "test"))
    # every chip is tested in one fold, or excluded there by the buffer
    assert set(tested) | {i for f in folds for i in f["excluded"]} == set(range(len(places)))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_kfold_validation_never_uses_test_chips(k):
    """Model selection in fold i looks at its own val blocks: disjoint from its test and its
    train chips, buffered from both, non-empty, deterministic by seed."""
    places = grid_places()
    folds = kfold_split(places, k, seed=2)
    for f in folds:
        val, test, train = set(f["val"]), set(f["test"]), set(f["train"])
        assert val and test and train
        assert not val & test and not val & train and not train & test
        for i in f["val"]:
            for j in f["test"]:
                assert gap(places[i].bounds, places[j].bounds) >= CHIP * PX - 1e-6, (i, j)
    assert folds == kfold_split(places, k, seed=2)
    n_val = np.mean([len(f["val"]) for f in folds])
    n_rest = np.mean([len(f["train"]) + len(f["val"]) for f in folds])
    assert 0.05 < n_val / n_rest < 0.35  # about FOLD_VAL_FRACTION of the non-test chips


def test_kfold_validation_of_ungeoreferenced_chips():
    places = [ChipPlace(0, (0, -1, i), None) for i in range(40)]
    for f in kfold_split(places, 4, seed=0, buffer=0):
        assert sorted(f["train"] + f["val"] + f["test"]) == list(range(40))
        assert len(f["test"]) == 10 and 0 < len(f["val"]) < 10


def test_ungeoreferenced_chips_split_randomly():
    places = [ChipPlace(0, (0, -1, i), None) for i in range(40)]
    split = blocked_split(places, seed=0)
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(40))
    assert len(split["train"]) == 28 and np.isclose(len(split["val"]), 6)
