"""The time store: dated chips of each place, spatial splits that keep a place's dates
together, (day 0, t) pairs, and the datasets over it."""

import json

import numpy as np
import pytest
import torch

from demgen.data.synth import SceneConfig
from demgen.data.synth.timeseries import TimeSeriesConfig, generate_time_series_world
from demgen.data.time_datamodule import TimeDataModule
from demgen.data.time_datasets import TimeFrameDataset, TimePairDataset
from demgen.data.timelayout import read_times
from demgen.data.timestore import TimeStore, build_time_store
from demgen.errors import InputError
from demgen.io.raster import read_raster


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    d = tmp_path_factory.mktemp("series")
    ts = TimeSeriesConfig(times=4, months_between=4, cloud_cover=0.3, urban_rate=0.3)
    places = generate_time_series_world(d / "w", 2, SceneConfig(size=96, seed=3), ts)
    store = build_time_store(places, d / "store", chip_size=32, block=1, buffer=0.0,
                             fractions=(0.5, 0.25, 0.25))  # fmt: skip
    return places, TimeStore(store)


def test_every_date_of_a_location_is_in_one_split(series):
    places, store = series
    m = store.manifest
    assert len(m["locations"]) == 2 * 9 and len(store.frames) == 2 * 9 * 4
    for f0, ft in m["pairs"]:
        assert m["frames"]["location"][f0] == m["frames"]["location"][ft]
        assert m["frames"]["t"][ft] > m["frames"]["t"][f0]
    seen: dict[int, set] = {}
    for f, loc in enumerate(m["frames"]["location"]):
        seen.setdefault(loc, set()).add(store.location_split(f))
    assert all(len(s) == 1 for s in seen.values())
    splits = {k: set(v) for k, v in m["splits"].items() if k != "excluded"}
    assert not (splits["train"] & splits["val"]) and not (splits["train"] & splits["test"])
    all_pairs = {tuple(p) for p in store.pairs("all")}
    by_split = [{tuple(p) for p in store.pairs(s)} for s in ("train", "val", "test")]
    assert set().union(*by_split) <= all_pairs and sum(map(len, by_split)) <= len(all_pairs)


def test_chips_are_the_places_pixels_and_day0_is_clear(series):
    places, store = series
    m = store.manifest
    doc = read_times(places[0])
    img, _ = read_raster(places[0] / doc["frames"][2]["dir"] / "image.tif")
    f = next(i for i in range(len(store.frames))
             if m["frames"]["t"][i] == 2 and m["frames"]["location"][i] == 4)  # fmt: skip
    loc = m["locations"][4]
    r, c = loc["row"], loc["col"]
    assert np.array_equal(store.frames[f], img[:, r : r + 32, c : c + 32])
    for f0, _ in m["pairs"]:
        assert m["frames"]["valid"][f0] >= 0.99
    assert m["image_dtype"] == "uint16" and m["pixel_size_m"] == [10.0, 10.0]
    assert m["normalization"]["image"]["strategy"] == "percentile"
    json.dumps(m, allow_nan=False)  # strict JSON


def test_pair_items_are_normalized_masked_and_changed_means_new(series):
    _, store = series
    ds = TimePairDataset(store, "all")
    assert len(ds) == len(store.manifest["pairs"])
    norm = store.image_norm
    for i in range(len(ds)):
        item = ds[i]
        f0, ft = store.manifest["pairs"][i]
        ok = (store.clouds[f0] == 0) & (store.clouds[ft] == 0)
        assert torch.equal(item["mask"][0], torch.from_numpy(ok))
        want = norm.apply(np.asarray(store.frames[ft], np.float32))
        assert np.allclose(item["target"].numpy()[:, ok], want[:, ok], atol=1e-6)
        assert torch.isfinite(item["image_t0"]).all() and torch.isfinite(item["target"]).all()
        new = (store.masks[ft] > 0) & (store.masks[f0] == 0) & ok
        assert torch.equal(item["changed"][0], torch.from_numpy(new))
        assert item["gap_days"] == store.days(ft) - store.days(f0) > 0
    frames = TimeFrameDataset(store, "train")
    item = frames[0]
    assert torch.equal(item["image_t0"], item["target"]) and not item["changed"].any()


def test_data_module_gives_what_fit_links(series):
    _, store = series
    dm = TimeDataModule(str(store.path), batch_size=4)
    assert dm.normalization["image"]["bands"] == ["B2", "B3", "B4", "B8"]
    assert dm.pixel_size == 10.0 and dm.store.manifest["chip_size"] == 32
    batch = next(iter(dm.train_dataloader()))
    assert batch["image_t0"].shape == (4, 4, 32, 32) and batch["mask"].dtype == torch.bool


def test_bad_inputs_are_one_line_errors(tmp_path, series):
    places, _ = series
    with pytest.raises(InputError, match="no time-series folder"):
        build_time_store([], tmp_path / "s")
    with pytest.raises(InputError, match="smaller than one"):
        build_time_store(places[:1], tmp_path / "s", chip_size=128)
    assert not (tmp_path / "s").exists()
    with pytest.raises(InputError, match="not a demgen time store"):
        TimeStore(tmp_path)


def test_prepare_series_cli_builds_a_time_store(tmp_path, series, capsys):
    from demgen.cli import main

    places, _ = series
    out = tmp_path / "ts"
    args = ["prepare", "--series", *map(str, places), "--chip-size", "32", "--block", "1",
            "--buffer", "0", "--split", "0.5,0.25,0.25", "-o", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "18 locations" in capsys.readouterr().out
    assert TimeStore(out).manifest["chip_size"] == 32
    assert main(args) == 2  # exists: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
