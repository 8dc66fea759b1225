"""PNG figures: hillshade, colour relief, side by side, error maps, learning curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.image import imread

from demgen.viz import figures


def _dem(n=48):
    yy, xx = np.mgrid[0:n, 0:n]
    return (100 + 30 * np.sin(xx / 7.0) + 20 * np.cos(yy / 5.0)).astype(np.float32)


def _png(path):
    a = imread(path)
    assert a.ndim == 3 and a.shape[0] > 200 and a.shape[1] > 200
    assert len(np.unique(a.reshape(-1, a.shape[-1]), axis=0)) > 50  # not blank
    return a


@pytest.fixture(autouse=True)
def _no_leaked_figures():
    before = len(plt.get_fignums())
    yield
    assert len(plt.get_fignums()) == before


def test_hillshade_relief_and_side_by_side(tmp_path):
    dem = _dem()
    _png(figures.hillshade_figure(tmp_path / "hs.png", dem, 10.0, azimuth=90, altitude=30))
    _png(figures.colour_relief(tmp_path / "relief.png", dem, (10.0, 10.0)))
    _png(
        figures.side_by_side(
            tmp_path / "sbs.png",
            [("pred", dem), ("true", dem + 5)],
            10.0,
            title="prediction vs reference",
        )
    )
    assert not list(tmp_path.glob(".*tmp*"))


def test_relief_axes_in_km_and_shared_scale():
    fig, ax = plt.subplots()
    im = figures.draw_relief(ax, _dem(50), (20.0, 10.0), vmin=0, vmax=500)
    assert im.get_clim() == (0, 500)
    x0, x1, y0, y1 = im.get_extent()
    assert (x1 - x0, y0 - y1) == pytest.approx((1.0, 0.5))  # 50 px x 20 m, 50 px x 10 m
    assert ax.get_xlabel() == "x (km)"
    plt.close(fig)


def test_error_map_is_diverging_and_centred_on_zero(tmp_path):
    truth = _dem()
    err = np.linspace(-3, 9, truth.size).reshape(truth.shape)
    fig, ax = plt.subplots()
    im = figures.draw_error(ax, err)
    assert im.norm(0.0) == pytest.approx(0.5)  # 0 m sits at the centre colour (white)
    assert im.norm.vmin == -im.norm.vmax
    centre = np.array(im.cmap(0.5)[:3])
    assert centre.min() > 0.9
    plt.close(fig)
    assert figures.error_limit(np.zeros((4, 4))) == 1.0
    _png(figures.error_map(tmp_path / "err.png", truth + err, truth, 10.0))


def test_learning_curves_from_lightning_csv(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,train_loss,val_loss,val_mae_m,val_rmse_m,val_bias_m\n"
        "0,9,0.80,,,,\n"
        "0,19,0.60,,,,\n"
        "0,19,,0.55,12.5,15.0,-1.5\n"
        "1,29,0.40,,,,\n"
        "1,39,0.30,,,,\n"
        "1,39,,0.35,8.0,10.5,0.5\n"
    )
    series = figures.read_metrics_csv(csv)
    assert [v for _, _, v in series["train_loss"]] == [0.8, 0.6, 0.4, 0.3]
    assert [(e, v) for _, e, v in series["val_mae_m"]] == [(0.0, 12.5), (1.0, 8.0)]
    _png(figures.learning_curves(csv, tmp_path / "curves.png"))
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step\n")
    with pytest.raises(ValueError):
        figures.learning_curves(empty, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_comparison_figure_signature_still_works(tmp_path):
    dem = _dem()
    img = np.stack([dem * (i + 1) for i in range(4)]).astype(np.float32)
    out = figures.comparison_figure(
        tmp_path / "cmp.png",
        image=img,
        bands=["B2", "B3", "B4", "B8"],
        truth=dem,
        prediction=dem + 1,
        pixel_size=(10.0, 10.0),
        title="t",
    )
    _png(out)
