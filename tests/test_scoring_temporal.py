"""demgen test on a time store: image + mask -> future image checkpoints scored on the
(day 0, t) pairs beside persistence and persistence painted, with a segmenter's building F1.

The tasks here are stand-ins implementing exactly the contract scoring relies on (spec,
fill_values, predict_batch, hparams): a "model" painting the mask_t pixels in one colour, an
oracle returning the true image, a "segmenter" thresholding brightness."""

from __future__ import annotations

import json
import shutil

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from demgen.cli import main
from demgen.data.synth import SceneConfig
from demgen.data.synth.timeseries import TimeSeriesConfig, generate_time_series_world
from demgen.data.timestore import TimeStore, build_time_store
from demgen.errors import InputError
from demgen.io.jsonio import dumps
from demgen.metrics.image import image_metrics
from demgen.metrics.masks import mask_metrics
from demgen.scoring import render_report, score_checkpoint
from demgen.scoring_temporal import (
    render_temporal_report,
    score_temporal_checkpoint,
    temporal_summary_line,
)
from demgen.tasks import registry
from demgen.tasks.base import ContractTask
from demgen.tasks.spec import LayerSpec, TaskSpec

pytestmark = pytest.mark.usefixtures("one_thread")
DARK = 3000.0  # the stand-in segmenter: a building where the band mean is below this


class StandInTemporal(ContractTask):
    """image_t0 (reflectance) + mask_t (class) -> image: the day-0 image, mask_t painted."""

    task_name = "standin_temporal"

    def __init__(self, bands: list[str], colour: list[float], reflectance_scale: float = 1e-4):
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.Identity()

    @property
    def spec(self) -> TaskSpec:
        b = tuple(self.hparams.bands)
        ins = (LayerSpec("image_t0", len(b), b, "reflectance"),
               LayerSpec("mask_t", 1, ("mask",), "class", gaps=True))  # fmt: skip
        return TaskSpec(ins, (LayerSpec("image", len(b), b, "reflectance"),), 1, 64)

    def fill_values(self, name: str) -> tuple[float, ...]:
        return (0.0,) if name == "mask_t" else (1000.0,) * len(self.hparams.bands)

    def predict_batch(self, inputs, valid):
        c = torch.tensor(self.hparams.colour, dtype=torch.float32).view(1, -1, 1, 1)
        return {"image": torch.where(inputs["mask_t"] > 0.5, c, inputs["image_t0"].float())}


class Oracle(StandInTemporal):
    """Returns the true images at t, in pair order (scoring predicts the pairs in order)."""

    def __init__(self, bands, truths: np.ndarray):
        super().__init__(bands, [0.0] * len(bands))
        self.truths, self.pos = torch.from_numpy(truths.astype(np.float32)), 0

    def predict_batch(self, inputs, valid):
        n = inputs["image_t0"].shape[0]
        self.pos += n
        return {"image": self.truths[self.pos - n : self.pos]}


class StandInSegmenter(ContractTask):
    """image (reflectance) -> buildings (probability): 1 where the band mean < ``dark``."""

    task_name = "standin_segment"

    def __init__(self, bands: list[str], dark: float = DARK, unit: str = "probability"):
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.Identity()

    @property
    def spec(self) -> TaskSpec:
        b = tuple(self.hparams.bands)
        out = LayerSpec("buildings", 1, ("buildings",), self.hparams.unit)
        return TaskSpec((LayerSpec("image", len(b), b, "reflectance"),), (out,), 1, 64)

    def fill_values(self, name: str) -> tuple[float, ...]:
        return (0.0,) * len(self.hparams.bands)

    def predict_batch(self, inputs, valid):
        x = inputs["image"].float()
        return {"buildings": (x.mean(dim=1, keepdim=True) < self.hparams.dark).float()}


def _dark(img: np.ndarray) -> np.ndarray:
    return np.asarray(img, np.float32).mean(axis=0) < DARK


@pytest.fixture(scope="module")
def ts(tmp_path_factory):
    d = tmp_path_factory.mktemp("scoring_temporal")
    cfg = TimeSeriesConfig(times=3, months_between=4, cloud_cover=0.3, urban_rate=0.3,
                           road_rate=0.05)  # fmt: skip
    places = generate_time_series_world(d / "w", 1, SceneConfig(size=96, seed=2,
                                        relief="plains"), cfg)  # fmt: skip
    path = build_time_store(places, d / "store", chip_size=32, block=1, buffer=0.0,
                            fractions=(0.5, 0.25, 0.25))  # fmt: skip
    s = TimeStore(path)
    new = [int(((s.masks[b] > 0) & (s.masks[a] == 0)).sum()) for a, b in s.pairs("train")]
    assert sum(new) > 0, "the fixture needs new buildings in the training pairs"
    return {"path": path, "store": s, "dir": d, "bands": s.bands}


def _valid(s, f0, ft):
    return (np.asarray(s.clouds[f0]) == 0) & (np.asarray(s.clouds[ft]) == 0)


def _roof(s) -> np.ndarray:
    tot, n = np.zeros(len(s.bands)), 0
    for f0, ft in s.pairs("train"):
        m = (s.masks[ft] > 0) & (s.masks[f0] == 0) & _valid(s, f0, ft)
        tot += np.asarray(s.frames[ft], np.float64)[:, m].sum(axis=1)
        n += int(m.sum())
    return tot / n


def _score(task, path, **kw):
    return score_temporal_checkpoint(task, path, progress=False, precision="32", **kw)


def test_persistence_on_one_pair_is_image_metrics_by_hand(ts, tmp_path):
    s = ts["store"]
    test = s.pairs("test")
    f0, ft = max(test.tolist(), key=lambda p: int(s.clouds[p[1]].sum()))  # the cloudiest
    one = tmp_path / "one"
    shutil.copytree(ts["path"], one)
    m = json.loads((one / "manifest.json").read_text())
    m["pairs"] = [p for p in m["pairs"] if p == [f0, ft] or s.location_split(p[0]) != "test"]
    (one / "manifest.json").write_text(json.dumps(m))
    task = StandInTemporal(ts["bands"], [500.0] * 4)
    r = _score(task, one, baseline_store=ts["path"])
    assert r["pairs"] == 1 and r["data_range"] == 1.0 and r["reflectance_scale"] == 1e-4
    ok = _valid(s, f0, ft)
    assert not ok.all() and r["valid_pixels"] == int(ok.sum())
    p0 = np.asarray(s.frames[f0], np.float64) * 1e-4
    pt = np.asarray(s.frames[ft], np.float64) * 1e-4
    want = image_metrics(p0, pt, ok, data_range=1.0, band_names=ts["bands"])
    got = r["methods"]["persistence"]["whole"]
    for k in ("psnr_db", "ssim", "sam_deg", "ergas", "mae", "rmse"):
        assert got[k] == pytest.approx(want[k], rel=1e-5), k
    new = (s.masks[ft] > 0) & (s.masks[f0] == 0) & ok
    assert r["changed_pixels"] == int(new.sum())
    chg = image_metrics(p0, pt, new, data_range=1.0, band_names=ts["bands"])
    assert r["methods"]["persistence"]["changed"]["mae"] == pytest.approx(chg["mae"], rel=1e-5)
    # no segmenter: F1 keys None, with a note; the report still renders, strict JSON
    assert r["methods"]["model"]["f1"] is None and r["true_image"]["iou"] is None
    assert "segmenter" in r["notes"]
    json.loads(dumps(r))
    text = render_temporal_report(r, "m.ckpt")
    assert text.count("| persistence (day-0 image) |") == 3 and "## New buildings" in text
    assert temporal_summary_line(r).startswith("model: PSNR ")


def test_painted_persistence_uses_the_training_roof_colour(ts, tmp_path):
    s = ts["store"]
    fig = tmp_path / "fig.png"
    r = _score(StandInTemporal(ts["bands"], [500.0] * 4), ts["path"], figure=fig)
    roof = _roof(s)
    assert r["roof_colour_from"] == "new buildings"
    assert np.allclose(r["roof_colour"], roof, rtol=1e-9)
    pers, paint = r["methods"]["persistence"], r["methods"]["persistence_painted"]
    # painted = persistence off the new buildings: whole SSE = persistence's, its changed
    # part replaced
    n, nc = pers["whole"]["valid_px"], pers["changed"]["valid_px"]
    assert nc == r["changed_pixels"] > 0 and paint["whole"]["valid_px"] == n
    sse = pers["whole"]["rmse"] ** 2 * n - pers["changed"]["rmse"] ** 2 * nc
    sse += paint["changed"]["rmse"] ** 2 * nc
    assert paint["whole"]["rmse"] ** 2 * n == pytest.approx(sse, rel=1e-5)
    # on the new buildings, painted is the roof colour
    errs = []
    for f0, ft in s.pairs("test"):
        m = (s.masks[ft] > 0) & (s.masks[f0] == 0) & _valid(s, f0, ft)
        errs.append(np.abs(roof[:, None] - np.asarray(s.frames[ft], np.float64)[:, m]) * 1e-4)
    mae = float(np.concatenate(errs, axis=1).mean())
    assert paint["changed"]["mae"] == pytest.approx(mae, rel=1e-5)
    assert paint["changed"]["mae"] != pytest.approx(pers["changed"]["mae"])
    assert fig.stat().st_size > 1000


def test_a_perfect_model_and_the_segmenter_f1_against_mask_t(ts):
    s = ts["store"]
    pairs = s.pairs("all")
    truths = np.stack([np.asarray(s.frames[ft]) for _, ft in pairs])
    seg = StandInSegmenter(ts["bands"])
    r = _score(Oracle(ts["bands"], truths), ts["path"], split="all", segmenter=seg,
               batch_size=4)  # fmt: skip
    m = r["methods"]["model"]
    assert m["whole"]["psnr_db"] == np.inf and m["whole"]["ssim"] == pytest.approx(1.0)
    assert m["whole"]["rmse"] == 0.0 and abs(m["whole"]["fd_demgen_rand"]) < 1e-4
    data = json.loads(dumps(r))
    assert data["methods"]["model"]["whole"]["psnr_db"] is None
    assert data["methods"]["model"]["changed"]["psnr_db"] is None
    assert m["f1"] == r["true_image"]["f1"] and m["iou"] == r["true_image"]["iou"]
    # by hand, against mask_t over the pixels usable at both dates
    ok = np.stack([_valid(s, a, b) for a, b in pairs])
    mt = np.stack([s.masks[b] > 0 for _, b in pairs])
    true = mask_metrics(np.stack([_dark(s.frames[b]) for _, b in pairs]), mt, ok)
    pers = mask_metrics(np.stack([_dark(s.frames[a]) for a, _ in pairs]), mt, ok)
    assert r["true_image"]["f1"] == pytest.approx(true["f1"]) and true["tp"] > 0
    assert r["methods"]["persistence"]["f1"] == pytest.approx(pers["f1"])
    assert r["methods"]["persistence"]["recall"] == pytest.approx(pers["recall"])
    assert r["segmenter"]["name"] == "standin_segment" and r["segmenter"]["threshold"] == 0.5
    assert "| true image at t (ceiling) |" in render_report(r, "oracle.ckpt")


def _save(task, path):
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "demgen_task": task.task_name, "pytorch-lightning_version": L.__version__},
               path)  # fmt: skip
    return path


@pytest.mark.filterwarnings("ignore:The state dict in")  # the stand-ins have no weights
def test_cli_scores_a_time_store_with_a_segmenter(ts, tmp_path, capsys, monkeypatch):
    for name, cls in (("standin_temporal", "StandInTemporal"),
                      ("standin_segment", "StandInSegmenter")):  # fmt: skip
        monkeypatch.setitem(registry.TASKS, name, f"{__name__}:{cls}")
    ckpt = _save(StandInTemporal(ts["bands"], [500.0] * 4), tmp_path / "t.ckpt")
    seg = _save(StandInSegmenter(ts["bands"]), tmp_path / "seg.ckpt")
    out = tmp_path / "out"
    argv = ["test", str(ckpt), str(ts["path"]), "--segmenter", str(seg), "--json", "-q",
            "-o", str(out)]  # fmt: skip
    assert main(argv) == 0

    def no_nan(c):
        raise ValueError(c)

    data = json.loads(capsys.readouterr().out, parse_constant=no_nan)
    assert set(data["methods"]) == {"model", "persistence", "persistence_painted"}
    assert data["segmenter"]["path"] == str(seg) and data["true_image"]["f1"] is not None
    assert data["methods"]["model"]["whole"]["psnr_db"] > 0
    assert json.loads((out / "metrics.json").read_text()) == data
    assert (out / "figure.png").stat().st_size > 1000 and "F1" in (out / "report.md").read_text()
    assert main(["test", str(ckpt), str(ts["path"]), "-q"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("model: PSNR ") and "true image: F1 n/a" in last
    # a segmenter without a probability output: one line, exit 2
    bad = _save(StandInSegmenter(ts["bands"], unit="value"), tmp_path / "bad.ckpt")
    assert main(["test", str(ckpt), str(ts["path"]), "--segmenter", str(bad), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "probability output" in err and len(err.splitlines()) == 1


def test_dispatch_is_on_the_store_format_and_the_input_units(ts, tmp_path):
    temporal = StandInTemporal(ts["bands"], [500.0] * 4)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "demgen-chips/1"}))
    with pytest.raises(InputError, match="time store"):
        score_checkpoint(temporal, tmp_path, progress=False)
    with pytest.raises(InputError, match="time stores only"):
        score_checkpoint(temporal, tmp_path, segmenter=StandInSegmenter(ts["bands"]))
    with pytest.raises(InputError, match="image \\+ mask -> image"):
        score_checkpoint(StandInSegmenter(ts["bands"]), ts["path"], progress=False)
