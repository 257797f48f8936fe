"""report.html as a clinician sees it: rendered in headless Chromium (skipped without one).

``DERMLIT_SCREENSHOTS=DIR`` also copies the screenshots there (e.g. docs/screenshots);
``DERMLIT_CHECK_RUN=RUN_DIR`` checks that run's report/report.html as well.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import check_page, render
from PIL import Image

from dermlit.constants import CLASSES
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
    return SplitOutputs([f"ISIC_{seed}{i:06d}" for i in range(n)], logits, t)


def test_report_html_renders_with_every_figure_and_table(tmp_path):
    ev = write_evaluation(
        tmp_path / "run",
        synthetic_outputs(400, 1),
        val=synthetic_outputs(300, 2),
        settings=EvalSettings.defaults(n_resamples=100),
    )
    page = check_page(
        ev.report.html_path, REPORT_TABLES, screenshot=tmp_path / "report.png", min_images=3
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
