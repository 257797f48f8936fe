"""report.html as a clinician sees it: rendered in headless Chromium (skipped without one).

``DERMLIT_SCREENSHOTS=DIR`` also copies the screenshots there (e.g. docs/screenshots);
``DERMLIT_CHECK_RUN=RUN_DIR`` checks that run's report/report.html as well, and
``DERMLIT_CHECK_GALLERY=FILE`` a ``dermlit predict --html`` gallery.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser import check_page, render
from PIL import Image

from dermlit.constants import CLASSES, ISIC_COLUMNS
from dermlit.evaluation.settings import EvalSettings
from dermlit.rundir import SplitOutputs, write_evaluation

pytestmark = pytest.mark.slow

#: captions of report.html's tables (report.py names them only in report.md's model)
REPORT_TABLES = (
    "value [95% CI]",
    "per class, value [95% CI]",
    "counts",
    "argmax vs Bayes decisions",
    "coverage at the configured targets",
)
#: tables of the sections added with the conformal sets and subgroups (issue 16)
NEW_REPORT_TABLES = (
    "coverage and mean set size per true class",
    "set-size distribution",
    "per subgroup, value [95% CI]",
)


def keep_screenshot(path: Path, name: str) -> None:
    target = os.environ.get("DERMLIT_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_helper_sees_relative_embedded_and_broken_images(tmp_path):
    (tmp_path / "ok.png").write_bytes(png_bytes((200, 0, 0)))
    data = base64.b64encode(png_bytes((0, 0, 200))).decode()
    page = tmp_path / "page.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>t</title></head><body>"
        '<table id="headline"><caption>value [95% CI]</caption><tr><td>1</td></tr></table>'
        f'<img src="ok.png"><img src="data:image/png;base64,{data}"><img src="gone.png">'
        "</body></html>"
    )
    seen = render(page, screenshot=tmp_path / "page.png", height=300)
    widths = {i["src"][:10]: i["naturalWidth"] for i in seen.images}
    assert widths == {"ok.png": 20, "data:image": 20, "gone.png": 0}
    assert [i["src"] for i in seen.broken_images] == ["gone.png"]
    assert seen.has_table("headline") and seen.has_table("95% CI") and not seen.has_table("x")
    assert Image.open(seen.screenshot).size == (1280, 300)
    with pytest.raises(AssertionError, match="gone.png"):
        check_page(page)
    (tmp_path / "gone.png").write_bytes(png_bytes((0, 200, 0)))
    with pytest.raises(AssertionError, match=r"tables \['decisions'\] missing"):
        check_page(page, tables=["headline", "decisions"])
    assert len(check_page(page, tables=["headline"], min_images=3).images) == 3


def synthetic_outputs(n: int, seed: int) -> SplitOutputs:
    rng = np.random.default_rng(seed)
    t = rng.choice(len(CLASSES), n, p=[0.05, 0.08, 0.12, 0.04, 0.12, 0.55, 0.04])
    t[: len(CLASSES)] = np.arange(len(CLASSES))
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), t] += 2.0
    ids = [f"ISIC_{seed}{i:06d}" for i in range(n)]
    meta = pd.DataFrame(
        {
            "image_id": ids,
            "age": rng.choice([20.0, 40.0, 55.0, 70.0, 85.0], n),
            "sex": rng.choice(["male", "female"], n),
            "localization": rng.choice(["back", "face", "ear"], n, p=[0.6, 0.35, 0.05]),
        }
    )
    return SplitOutputs(ids, logits, t, meta)


def test_report_html_renders_with_every_figure_and_table(tmp_path):
    ev = write_evaluation(
        tmp_path / "run",
        synthetic_outputs(400, 1),
        val=synthetic_outputs(300, 2),
        settings=EvalSettings.defaults(n_resamples=100),
    )
    page = check_page(
        ev.report.html_path,
        REPORT_TABLES + NEW_REPORT_TABLES,
        screenshot=tmp_path / "report.png",
        min_images=3,
    )
    assert page.title
    assert Image.open(page.screenshot).size[1] > 3000  # the whole page, not one window
    keep_screenshot(page.screenshot, "report.png")


def test_existing_run_report(tmp_path):
    run = os.environ.get("DERMLIT_CHECK_RUN")
    if not run:
        pytest.skip("set DERMLIT_CHECK_RUN=RUN_DIR to check a run's report/report.html")
    page = check_page(
        Path(run) / "report" / "report.html",
        REPORT_TABLES,
        screenshot=tmp_path / "run_report.png",
        min_images=3,
    )
    keep_screenshot(page.screenshot, "run_report.png")


def test_predict_gallery_renders_every_thumbnail(tmp_path):
    """The ``dermlit predict --html`` page: a card per image, every thumbnail decoded, one
    top-3 table per readable image, the unreadable one shown with its reason."""
    from dermlit.data.synthetic_render import render_lesion, sample_lesion
    from dermlit.inference.gallery import write_gallery
    from dermlit.inference.predictor import jpeg_bytes

    rng = np.random.default_rng(0)
    n = 12
    probs = rng.dirichlet(np.ones(len(CLASSES)), n)
    table = pd.DataFrame({"image": [f"case_{i:02d}.jpg" for i in range(n)]})
    for col in ISIC_COLUMNS:
        table[col] = probs[:, CLASSES.index(col.lower())]
    table["diagnosis"] = [CLASSES[i] for i in probs.argmax(1)]
    table["decision"] = table["diagnosis"]
    table["refer"] = probs.max(1) < 0.4
    table["refer_reason"] = np.where(table["refer"], "expected cost 0.9 > 0.5", "")
    table["prediction_set"] = table["diagnosis"]
    table["set_size"] = 1
    table["error"] = [""] * (n - 1) + ["not an image PIL can read: case_11.jpg"]
    table["note"] = ""
    thumbs = [
        jpeg_bytes(render_lesion(sample_lesion(CLASSES[i % 7], rng), rng, 96, 96))
        for i in range(n - 1)
    ] + [None]
    path = write_gallery(tmp_path / "gallery.html", table, thumbs, "dermlit predict: gallery")
    page = check_page(path, ["top-3"], screenshot=tmp_path / "gallery.png", min_images=n - 1)
    assert len(page.images) == n - 1
    assert sum(t["caption"] == "top-3" for t in page.tables) == n - 1
    keep_screenshot(page.screenshot, "predict_gallery.png")


def test_existing_predict_gallery(tmp_path):
    gallery = os.environ.get("DERMLIT_CHECK_GALLERY")
    if not gallery:
        pytest.skip("set DERMLIT_CHECK_GALLERY=FILE to check a `dermlit predict --html` page")
    page = check_page(gallery, ["top-3"], screenshot=tmp_path / "run_gallery.png")
    cards = Path(gallery).read_text().count('class="card')
    errors = Path(gallery).read_text().count('class="card error"')
    assert len(page.images) == cards - errors
    keep_screenshot(page.screenshot, "run_predict_gallery.png")
