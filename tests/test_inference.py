import numpy as np
import pytest
import rasterio
import torch

from demgen.data.normalize import ElevationNorm, ImageNorm
from demgen.errors import InputError
from demgen.inference.scene import NODATA, blend_weight, predict_scene, window_starts
from demgen.io.raster import write_raster
from demgen.tasks.regression import DEMRegressionTask


class Pointwise(torch.nn.Module):
    """A per-pixel model: the output at a pixel depends on that pixel only."""

    size_multiple = 1

    def forward(self, x):
        return 0.5 * x[:, :1] - 0.25 * x[:, 3:4]


def _task():
    inorm = ImageNorm(["B2", "B3", "B4", "B8"], 1e-4, [0.1] * 4, [0.05] * 4)
    task = DEMRegressionTask(inorm.to_dict(), ElevationNorm(100.0, 900.0).to_dict(),
                             base=4, depth=1, chip_size=32)  # fmt: skip
    task.model = Pointwise()
    return task, inorm


def test_window_starts_cover_everything():
    for length, win, stride in [(100, 32, 24), (64, 64, 48), (30, 32, 24), (97, 16, 16)]:
        starts = window_starts(length, win, stride)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + win] = True
        assert covered.all() and starts[-1] + min(win, length) == length


def test_blend_weight_is_smooth_and_positive():
    w = blend_weight(16)
    assert w.min() > 0 and w.max() <= 1 and np.allclose(w, w.T)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.6])
def test_streamed_prediction_equals_pointwise_model(tmp_path, image_file, overlap):
    task, inorm = _task()
    out = predict_scene(task, image_file, tmp_path / "pred.tif", window=32, overlap=overlap,
                        precision="32", progress=False)  # fmt: skip
    with rasterio.open(image_file) as src, rasterio.open(out) as dst:
        img = src.read().astype(np.float32)
        pred = dst.read(1)
        assert dst.crs == src.crs and dst.transform == src.transform
        assert dst.shape == src.shape and dst.nodata == NODATA
        assert dst.descriptions == ("dtm",) and dst.units == ("metre",)
    x = inorm.apply(img)
    expected = ElevationNorm(100.0, 900.0).inverse(0.5 * x[0] - 0.25 * x[3])
    np.testing.assert_allclose(pred, expected, rtol=1e-5, atol=1e-3)


def test_nodata_input_gives_nodata_output(tmp_path, transform):
    img = np.full((4, 40, 40), 1000, np.uint16)
    img[:, 5, 7] = 0
    path = write_raster(tmp_path / "i.tif", img, crs="EPSG:32633", transform=transform,
                        nodata=0, descriptions=["B2", "B3", "B4", "B8"])  # fmt: skip
    task, _ = _task()
    out = predict_scene(task, path, tmp_path / "p.tif", window=16, precision="32", progress=False)
    with rasterio.open(out) as dst:
        pred = dst.read(1)
    assert pred[5, 7] == NODATA and (pred != NODATA).sum() == 40 * 40 - 1


def test_missing_band_is_an_input_error_and_writes_nothing(tmp_path, transform):
    path = write_raster(tmp_path / "i.tif", np.ones((3, 32, 32), np.uint16), crs="EPSG:32633",
                        transform=transform, descriptions=["B2", "B3", "B4"])  # fmt: skip
    task, _ = _task()
    with pytest.raises(InputError, match="B8"):
        predict_scene(task, path, tmp_path / "p.tif", progress=False)
    assert not (tmp_path / "p.tif").exists()


def test_prediction_folds_batchnorm_on_a_copy(tmp_path, image_file):
    """A real U-Net predicts the same with and without the inference-time folding, and the
    caller's task keeps its BatchNorms, its training mode and its memory format."""
    torch.manual_seed(0)
    inorm = ImageNorm(["B2", "B3", "B4", "B8"], 1e-4, [0.1] * 4, [0.05] * 4)
    task = DEMRegressionTask(inorm.to_dict(), ElevationNorm(100.0, 900.0).to_dict(),
                             base=4, depth=2, stem=2, chip_size=16)  # fmt: skip
    for m in task.modules():  # as after training: non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in task.modules())
    out = predict_scene(task, image_file, tmp_path / "p.tif", window=32, precision="32",
                        progress=False)  # fmt: skip
    assert task.training and not task._channels_last
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in task.modules()) == n_bn
    with rasterio.open(image_file) as src:
        x = torch.from_numpy(inorm.apply(src.read().astype(np.float32))[:, :96, :80])
    task.eval()
    with torch.no_grad():
        ref = task.predict_metres(x[None, :, :32, :32])[0, 0].numpy()
    with rasterio.open(out) as dst:
        pred = dst.read(1, window=((0, 32), (0, 32)))
    # the first window's corner is covered by that window alone (blend weight 1 there)
    np.testing.assert_allclose(pred[:8, :8], ref[:8, :8], rtol=1e-4, atol=1e-2)


class _TwoOutputs(DEMRegressionTask):
    """A task declaring a second input and two outputs (heights and a 2-band probability):
    prediction must follow the declaration alone."""

    @property
    def spec(self):
        from demgen.tasks.spec import LayerSpec, TaskSpec

        base = super().spec
        return TaskSpec(
            inputs=(*base.inputs, LayerSpec("weight", 1, ("weight",), "value")),
            outputs=(*base.outputs, LayerSpec("prob", 2, ("wet", "dry"), "probability")),
            window_multiple=1, window=32,
        )  # fmt: skip

    def fill_values(self, name):
        return (1.0,) if name == "weight" else super().fill_values(name)

    def predict_batch(self, inputs, valid):
        out = super().predict_batch(inputs, valid)
        p = torch.sigmoid(inputs["weight"])
        out["prob"] = torch.cat([p, 1 - p], dim=1)
        return out


def test_predict_scene_writes_every_declared_output(image_file, tmp_path):
    """Named inputs (the second on a coarser grid, warped onto the first), one GeoTIFF per
    output with its unit and band names, the datum tag only on heights, and a one-line
    error naming what a checkpoint needs."""
    from rasterio.transform import from_origin

    from demgen.inference.scene import output_files

    task, _ = _task()
    task.__class__ = _TwoOutputs
    with rasterio.open(image_file) as ds:
        crs, tr, (h, w) = ds.crs, ds.transform, ds.shape
    weight = write_raster(tmp_path / "w.tif", np.zeros((h // 2, w // 2), np.float32), crs=crs,
                          transform=from_origin(tr.c, tr.f, 20.0, 20.0))  # fmt: skip
    with pytest.raises(InputError, match=r"needs inputs \['image', 'weight'\]; missing"):
        predict_scene(task, image_file, tmp_path / "x.tif", progress=False)
    with pytest.raises(InputError, match="unknown input 'nope'"):
        predict_scene(task, {"image": image_file, "weight": weight, "nope": weight},
                      tmp_path / "x.tif", progress=False)  # fmt: skip
    out = predict_scene(task, {"image": image_file, "weight": weight}, tmp_path / "p.tif",
                        precision="32", tta=True, progress=False)  # fmt: skip
    files = output_files(task.spec, tmp_path / "p.tif")
    assert out == files["dtm"] == tmp_path / "p_dtm.tif" and files["prob"].name == "p_prob.tif"
    with rasterio.open(files["dtm"]) as ds:
        assert ds.descriptions == ("dtm", "tta_std") and ds.tags()["vertical_crs"] == "unknown"
        assert ds.crs == crs and ds.transform == tr
    with rasterio.open(files["prob"]) as ds:
        assert ds.descriptions == ("wet", "dry", "wet_tta_std", "dry_tta_std")
        assert ds.units == ("probability",) * 4 and "vertical_crs" not in ds.tags()
        assert ds.crs == crs and ds.transform == tr and ds.shape == (h, w)
        np.testing.assert_allclose(ds.read(1), 0.5, atol=1e-6)  # sigmoid(0): warped zeros
        np.testing.assert_allclose(ds.read(3), 0.0, atol=1e-6)
