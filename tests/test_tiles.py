"""import_tiles: Sat2DEM's layout (satellite and DEM folders paired by ``_<n>.tif``,
dataset_splits.json with split_1..split_4) into a chip store, georeferencing kept, with the
published random split (recorded as such) or demgen's blocked split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rasterio.transform import from_origin

from demgen.data.chips import ChipStore
from demgen.data.prepare import PrepareConfig
from demgen.data.tiles import import_tiles
from demgen.errors import InputError
from demgen.io.raster import write_raster

TILE, N_SIDE = 16, 5  # a 5 x 5 mosaic of 16-px tiles at 30 m


@pytest.fixture
def layout(tmp_path):
    sat, dem = tmp_path / "sat", tmp_path / "dem"
    rng = np.random.default_rng(0)
    for i in range(N_SIDE * N_SIDE):
        r, c = divmod(i, N_SIDE)
        t = from_origin(500_000 + c * TILE * 30, 4_500_000 - r * TILE * 30, 30, 30)
        img = rng.integers(1, 255, (3, TILE, TILE)).astype(np.uint8)
        h = (1000 + 10 * r + c + rng.normal(0, 1, (TILE, TILE))).astype(np.float32)
        write_raster(sat / f"sat_{i}.tif", img, crs="EPSG:32630", transform=t)
        write_raster(dem / f"dem_{i}.tif", h, crs="EPSG:32630", transform=t)
    write_raster(sat / "sat_99.tif", img, crs="EPSG:32630", transform=t)  # no DEM partner
    ids = rng.permutation(N_SIDE * N_SIDE).tolist()
    splits = {f"split_{k}": {"train": ids[:15], "validation": ids[15:20], "test": ids[20:]}
              for k in range(1, 5)}  # fmt: skip
    (tmp_path / "dataset_splits.json").write_text(json.dumps(splits))
    return tmp_path, ids


def test_published_split_keeps_georeferencing(layout):
    d, ids = layout
    out = import_tiles(d / "sat", d / "dem", d / "store", PrepareConfig(),
                       d / "dataset_splits.json", "split_2")  # fmt: skip
    s = ChipStore(out)
    m = s.manifest
    assert m["count"] == 25 and m["chip_size"] == TILE and m["unpaired_tiles"] == [99]
    assert m["splits"]["strategy"] == "published-random" and "split_2" in m["splits"]["source"]
    tile_of = [c["tile"] for c in m["chips"]]
    assert sorted(tile_of[i] for i in m["splits"]["train"]) == sorted(ids[:15])
    assert sorted(tile_of[i] for i in m["splits"]["val"]) == sorted(ids[15:20])
    assert sorted(tile_of[i] for i in m["splits"]["test"]) == sorted(ids[20:])
    c7 = m["chips"][tile_of.index(7)]
    assert c7["crs"] == "EPSG:32630" and c7["transform"][2] == 500_000 + 2 * TILE * 30
    assert m["normalization"]["train_chips"] == 15 and m["pixel_size_m"] == [30.0, 30.0]
    assert np.isfinite(s.elevation[0]).all() and s.image.shape == (25, 3, TILE, TILE)


def test_blocked_split_deals_whole_blocks(layout):
    d, _ = layout
    cfg = PrepareConfig(block=2, buffer=0.0, min_blocks=6)
    m = ChipStore(import_tiles(d / "sat", d / "dem", d / "blocked", cfg)).manifest
    sp = m["splits"]
    assert sp["strategy"] == "spatial-blocks" and sp["block"] == 2
    assert sp["train"] and sp["val"] and sp["test"]
    split_of = {i: s for s in ("train", "val", "test") for i in sp[s]}
    block_split: dict[tuple[int, int], set[str]] = {}
    for i, c in enumerate(m["chips"]):  # 2 x 2 tiles on the ground go to one split
        r, col = divmod(c["tile"], N_SIDE)
        block_split.setdefault((r // 2, col // 2), set()).add(split_of[i])
    assert all(len(v) == 1 for v in block_split.values())


def test_bad_layouts_are_input_errors(layout, tmp_path):
    d, _ = layout
    with pytest.raises(InputError, match="no split 'split_9'"):
        import_tiles(d / "sat", d / "dem", d / "x", None, d / "dataset_splits.json", "split_9")
    with pytest.raises(InputError, match="go together"):
        import_tiles(d / "sat", d / "dem", d / "x", None, d / "dataset_splits.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no \\*_<n>.tif tiles"):
        import_tiles(tmp_path / "empty", d / "dem", d / "x")
    assert not (d / "x").exists()


def test_prepare_cli_tiles_with_a_published_split(layout, capsys):
    from demgen.cli import main

    d, ids = layout
    argv = ["prepare", "--tiles", str(d / "sat"), str(d / "dem"), "-o", str(d / "cli"),
            "--splits", str(d / "dataset_splits.json"), "--split", "split_3", "-q"]  # fmt: skip
    assert main(argv) == 0
    m = ChipStore(d / "cli").manifest
    assert m["splits"]["strategy"] == "published-random" and "split_3" in m["splits"]["source"]
    tile_of = [c["tile"] for c in m["chips"]]
    assert sorted(tile_of[i] for i in m["splits"]["test"]) == sorted(ids[20:])
    capsys.readouterr()
    # a published split name without the file, and --splits without --tiles: one line, exit 2
    for bad in (["--tiles", str(d / "sat"), str(d / "dem"), "--split", "split_1"],
                ["--image", "a.tif", "--dem", "b.tif", "--splits", "s.json"]):  # fmt: skip
        assert main(["prepare", *bad, "-o", str(d / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err
