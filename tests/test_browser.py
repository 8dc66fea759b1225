"""The 3D viewer as a person sees it: headless Chromium opens the page from a file.

Needs Debian's ``chromium`` (``make test`` installs it when missing) and the
``playwright`` Python package (dev extras; only its driver is used, never its
browser download). Skips with the reason when either is missing.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest

from demgen.viz.viewer import render_view

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
BACKGROUND = (0x1F, 0x25, 0x2D)  # the page's clear colour


def find_chromium() -> str | None:
    """Path of a Chromium binary: $DEMGEN_CHROMIUM, else chromium on PATH."""
    env = os.environ.get("DEMGEN_CHROMIUM")
    if env and os.path.exists(env):
        return env
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    chromium = find_chromium()
    if chromium is None:
        pytest.skip(
            "chromium not found (apt-get install chromium; make test tries): browser tests skipped"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (pip install -e .[dev])"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from demgen.data.synth import SceneConfig, generate_scene

    root = tmp_path_factory.mktemp("scene")
    return generate_scene(root / "scene", SceneConfig(size=160, seed=5, relief="hills"))


def _open(browser, html_path):
    page = browser.new_page(viewport={"width": 1000, "height": 650})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(html_path.resolve().as_uri())
    page.wait_for_function("window.demgenReady === true || !!window.demgenError", timeout=90_000)
    assert page.evaluate("window.demgenError || null") is None
    assert not errors, errors
    return page


def _pixels(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    a = imread(io.BytesIO(png), format="png")[..., :3]
    return (a * 255).round().astype(np.int16)


def _shot(page, index=0) -> np.ndarray:
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return _pixels(page.locator("canvas").nth(index).screenshot())


def _terrain_fraction(px: np.ndarray) -> float:
    return float((np.abs(px - np.array(BACKGROUND)).sum(-1) > 12).mean())


def test_viewer_renders_terrain_and_layer_toggle_changes_it(browser, scene, tmp_path):
    out = tmp_path / "view.html"
    render_view(scene / "dtm.tif", out, images=[scene / "image.tif"])
    page = _open(browser, out)
    image = _shot(page)
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    assert colours > 2000, f"only {colours} distinct colours: blank or flat canvas"
    assert _terrain_fraction(image) > 0.2, "terrain covers too little of the canvas"
    assert page.locator("#layer-image").get_attribute("class") == "active"

    page.click("#layer-hillshade")
    hill = _shot(page)
    changed = float((np.abs(hill - image).sum(-1) > 30).mean())
    assert changed > 0.15, f"toggling the layer changed only {changed:.1%} of the pixels"
    terrain = np.abs(hill - np.array(BACKGROUND)).sum(-1) > 12
    grey = np.abs(hill[..., 0] - hill[..., 2])[terrain]
    assert np.median(grey) < 6, "the hillshade layer should be grey"

    page.click("#layer-relief")
    relief = _shot(page)
    assert float((np.abs(relief - hill).sum(-1) > 30).mean()) > 0.15
    assert page.locator("#legend-max").inner_text().endswith(" m")
    page.close()


def test_compare_views_have_linked_cameras(browser, scene, tmp_path):
    out = tmp_path / "compare.html"
    render_view(scene / "dtm.tif", out, compare=scene / "dsm.tif")
    page = _open(browser, out)
    assert page.locator("canvas").count() == 2
    before = _shot(page, 1)
    assert _terrain_fraction(before) > 0.1
    box = page.locator("canvas").nth(0).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 150, y + 40, steps=8)
    page.mouse.up()
    after = _shot(page, 1)  # dragging the left view turned the right one too
    assert float((np.abs(after - before).sum(-1) > 30).mean()) > 0.1
    page.close()
