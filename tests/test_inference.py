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
