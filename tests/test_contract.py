"""The task contract, for every registered task: build it small, fit two steps on a tiny
store, save, load with ``load_task``, predict a 2-window scene from named inputs, export
(TorchScript) and check the exported graph against the checkpoint on the same input. Image ->
heights and heights -> image tasks alike: the store is the same, the roles swapped. The
time-series tasks (temporal synthesis, building segmentation) train on a tiny synthetic time
store instead and predict from a day-0 image and a building mask cropped from its series."""

from __future__ import annotations

import importlib.util
import json

import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from demgen.data.datamodule import ChipDataModule
from demgen.data.prepare import PrepareConfig, prepare_rasters
from demgen.data.synth import SceneConfig, generate_scene
from demgen.export import export_model
from demgen.inference.scene import NODATA, output_files, predict_scene
from demgen.io.raster import write_raster
from demgen.tasks import TASKS, TaskSpec, load_task, task_class
from demgen.tasks.refine import RefineTask

CHIP = 32
#: The prediction scene: one row of two 32-px windows overlapping by 8 px.
ROWS, COLS, WINDOW, OVERLAP = 32, 56, 32, 0.25
EXTRAS = ("initial_dsm", "ortho2", "triangulation_error")
TINY_G = {"base": 8, "depth": 5, "dropout": 0.0}  # the pix2pix U-Net at 32 px
TINY_D = {"base": 8, "n_layers": 2}
#: Tasks that train on a time store (demgen.data.time_datamodule), not on a chip store.
TIME_TASKS = ("segment", "temporal", "temporal_diffusion")
#: The denoiser of the diffusion tasks, tiny; two DDIM steps a sample.
TINY_DIFFUSION = {"base_channels": 8, "channel_mults": [1, 2], "sample_steps": 2, "val_steps": 1}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One small stereo scene, its stores (plain heights; residual with the refinement
    layers) and every raster cropped to the 2-window prediction scene."""
    d = tmp_path_factory.mktemp("contract")
    scene = generate_scene(d / "scene", SceneConfig(size=96, seed=5, stereo=True))
    base = {"chip_size": CHIP, "block": 1, "buffer": 0.0, "min_blocks": 2,
            "fractions": (0.6, 0.4, 0.0)}  # fmt: skip
    plain = prepare_rasters([scene / "image.tif"], [scene / "dtm.tif"], d / "plain",
                            PrepareConfig(normalize="global", **base))  # fmt: skip
    refine = prepare_rasters([scene / "image.tif"], [scene / "dsm.tif"], d / "refine",
                             PrepareConfig(normalize="residual", **base),
                             extras=[scene / f"{n}.tif" for n in EXTRAS])  # fmt: skip
    crops = {}
    for name in ("image", "dtm", *EXTRAS):
        with rasterio.open(scene / f"{name}.tif") as ds:
            w = Window(8, 16, COLS, ROWS)
            crops[name] = write_raster(
                d / f"crop_{name}.tif", ds.read(window=w), crs=ds.crs,
                transform=ds.window_transform(w), nodata=ds.nodata,
                descriptions=list(ds.descriptions) if any(ds.descriptions) else None,
            )  # fmt: skip
    return {"plain": str(plain), "refine": str(refine), "crops": crops}


@pytest.fixture(scope="module")
def time_world(tmp_path_factory):
    """A tiny synthetic time store (one 96-px place, 3 dates, no clouds) and the prediction
    scene's crops of its series: the day-0 image and the last date's building mask."""
    if importlib.util.find_spec("demgen.data.time_datamodule") is None:
        pytest.skip("the time store (demgen.data.time_datamodule) is not in this checkout")
    from demgen.data.time_datamodule import SynthTimeSeriesDataModule

    d = tmp_path_factory.mktemp("contract_time")
    args = {"cache_dir": str(d / "cache"), "n_scenes": 1, "size": 96, "times": 3,
            "cloud_cover": 0.0, "chip_size": CHIP, "block": 1, "fractions": (0.5, 0.5, 0.0),
            "batch_size": 2, "num_workers": 0, "augment": False}  # fmt: skip
    dm = SynthTimeSeriesDataModule(**args)
    series = sorted((d / "cache").glob("synthtime_*/series/*/t00"))[0].parent
    dates = sorted(series.glob("t[0-9]*"))
    crops = {}
    for name, src in (("image_t0", dates[0] / "image.tif"),
                      ("mask_t", dates[-1] / "buildings.tif")):  # fmt: skip
        with rasterio.open(src) as ds:
            w = Window(8, 16, COLS, ROWS)
            crops[name] = write_raster(
                d / f"crop_{name}.tif", ds.read(window=w), crs=ds.crs,
                transform=ds.window_transform(w), nodata=ds.nodata,
                descriptions=list(ds.descriptions) if any(ds.descriptions) else None,
            )  # fmt: skip
    crops["image"] = crops["image_t0"]
    return {"args": args, "pairs": dm, "crops": crops}


def _build_time(name: str, time_world) -> tuple[L.LightningModule, L.LightningDataModule]:
    """A tiny time-series task and its data module: pairs for temporal synthesis, dated
    frames for segmentation (what their recipes use)."""
    from demgen.data.time_datamodule import SynthTimeSeriesDataModule

    dm = time_world["pairs"]
    if name == "segment":
        dm = SynthTimeSeriesDataModule(**time_world["args"], mode="frames")
    common = {"chip_size": CHIP, "pixel_size": dm.pixel_size, "channels_last": False,
              "image_dtype": dm.store.manifest["image_dtype"]}  # fmt: skip
    norm = dm.normalization["image"]
    if name == "temporal_diffusion":
        task = task_class(name)(norm, None, use_gap=True, diffusion=TINY_DIFFUSION, **common)
    elif name == "temporal":
        task = task_class(name)(norm, None, generator="attention_unet", use_gap=True,
                                generator_kwargs={"base": 8, "depth": 2},
                                discriminator_kwargs=TINY_D, **common)  # fmt: skip
    else:
        task = task_class(name)(norm, None, generator_kwargs={"base": 8, "depth": 2}, **common)
    return task, dm


def _build(name: str, world) -> tuple[L.LightningModule, ChipDataModule]:
    """A tiny task of the registered ``name`` and the data module it trains on."""
    refine = name == "refine"
    roles = {"inputs": ["elevation"], "targets": ["image"]} if name.startswith("dem2") else {}
    dm = ChipDataModule(world["refine" if refine else "plain"], batch_size=2, num_workers=0,
                        extra=refine, augment=False, **roles)  # fmt: skip
    norms = dm.normalization
    common = {"chip_size": CHIP, "pixel_size": dm.pixel_size, "channels_last": False}
    if name == "regression":
        task = task_class(name)(norms["image"], norms["elevation"], base=8, depth=2, **common)
    elif name in ("pix2pix", "drpan"):
        task = task_class(name)(norms["image"], norms["elevation"], generator_kwargs=TINY_G,
                               discriminator_kwargs=TINY_D, **common)  # fmt: skip
    elif name == "dem2image":
        task = task_class(name)(norms["image"], norms["elevation"], base=8, depth=2, **common)
    elif name in ("image2dem_diffusion", "dem2image_diffusion"):
        task = task_class(name)(norms["image"], norms["elevation"], diffusion=TINY_DIFFUSION,
                                **common)  # fmt: skip
    elif name == "dem2image_pix2pix":
        task = task_class(name)(norms["image"], norms["elevation"], generator_kwargs=TINY_G,
                               discriminator_kwargs=TINY_D, **common)  # fmt: skip
    elif refine:
        task = RefineTask.from_datamodule(dm, generator_kwargs={"base": 8, "depth": 2},
                                          target="dsm", **common)  # fmt: skip
    else:
        pytest.fail(f"task {name!r} is registered but the contract test cannot build it: "
                    "add a tiny builder to tests/test_contract.py")  # fmt: skip
    return task, dm


def _named_inputs(spec: TaskSpec, crops) -> dict[str, str]:
    """Each input layer's raster: the image is ``image`` for the one-input tasks and
    ``ortho1`` for refinement, the DEM of DEM -> image is ``dtm``; every other layer goes by
    its own name."""
    alias = {"ortho1": "image", "dem": "dtm"}
    return {la.name: crops[alias.get(la.name, la.name)] for la in spec.inputs}


def _read_inputs(task, paths) -> tuple[dict, dict]:
    """The first 32 x 32 window of every input, as ``predict_batch`` takes it: in its units,
    invalid pixels the task's fill."""
    spec = task.spec
    inputs, valid = {}, {}
    for la in spec.inputs:
        with rasterio.open(paths[la.name]) as ds:
            a = ds.read(window=Window(0, 0, WINDOW, WINDOW)).astype(np.float32)
        a = a[: la.channels]
        ok = np.isfinite(a).all(axis=0, keepdims=True)
        fill = np.asarray(task.fill_values(la.name), np.float32).reshape(-1, 1, 1)
        inputs[la.name] = torch.from_numpy(np.where(ok, a, fill))[None]
        valid[la.name] = torch.from_numpy(ok)[None]
    return inputs, valid


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_contract(name, request, tmp_path):
    torch.manual_seed(0)
    if name in TIME_TASKS:
        world = request.getfixturevalue("time_world")
        task, dm = _build_time(name, world)
    else:
        world = request.getfixturevalue("world")
        task, dm = _build(name, world)
    spec = task.spec
    assert isinstance(spec, TaskSpec) and spec.window_multiple >= 1
    assert all(la.unit in ("metre", "reflectance", "probability") for la in spec.outputs)

    # fit two steps, save as `demgen fit` does, load by the recorded task name
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                        num_sanity_val_steps=0, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, dm)
    ckpt = tmp_path / f"{name}.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = load_task(ckpt).eval()
    assert type(loaded) is type(task) and loaded.spec == spec

    # predict a 2-window scene from named inputs
    paths = _named_inputs(spec, world["crops"])
    out = predict_scene(loaded, paths, tmp_path / "pred.tif", window=WINDOW, overlap=OVERLAP,
                        precision="32", progress=False)  # fmt: skip
    files = output_files(spec, tmp_path / "pred.tif")
    assert out == files[spec.outputs[0].name]
    with rasterio.open(paths[spec.inputs[0].name]) as grid:
        crs, transform = grid.crs, grid.transform
    for la in spec.outputs:
        nodata = NODATA if la.dtype == "float32" else 0
        with rasterio.open(files[la.name]) as ds:
            assert (ds.height, ds.width, ds.count) == (ROWS, COLS, la.channels)
            assert ds.crs == crs and ds.transform == transform and ds.nodata == nodata
            assert ds.dtypes == (la.dtype,) * la.channels
            assert ds.units == (la.unit,) * la.channels
            if la.unit == "metre":
                assert ds.tags()["vertical_crs"] == "unknown"
                assert ds.descriptions[0].endswith(la.name)
            else:
                assert ds.descriptions == la.bands
            values = ds.read(1)
        assert np.isfinite(values).all() and (values != nodata).mean() > 0.5

    if spec.diffusion:  # sampled by iteration: no one-pass graph to export, said in one line
        from demgen.errors import InputError

        with pytest.raises(InputError, match="diffusion"):
            export_model(loaded, tmp_path / f"{name}.pt", "torchscript")
        return
    # export, and the exported graph against the checkpoint on the same normalized input
    pt = export_model(loaded, tmp_path / f"{name}.pt", "torchscript")
    meta = json.loads(pt.with_name(pt.name + ".json").read_text())
    assert [la["name"] for la in meta["spec"]["inputs"]] == spec.input_names
    assert meta["spec"]["outputs"][0]["unit"] == spec.outputs[0].unit
    inputs, valid = _read_inputs(loaded, paths)
    with torch.no_grad():
        x = loaded.encode(inputs, valid)
        assert x.shape[1] == len(meta["inputs"]) and torch.isfinite(x).all()
        expected = loaded(x).float()
        got = torch.jit.load(str(pt))(x).float()
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        # decoded, the export gives what predict_batch gives, in the output units
        want = loaded.predict_batch(inputs, valid)
        for key, value in loaded.decode(got, inputs, valid).items():
            torch.testing.assert_close(value, want[key], atol=1e-3, rtol=1e-5)
