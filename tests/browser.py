"""Render an HTML file in headless Chromium (Debian's ``chromium``; ``make browser`` installs it)
and check what a clinician would see: every <img> decoded, the named tables present.

No Playwright or browser download: two plain Chromium runs. ``--dump-dom`` on a copy of the page
with a ``<base>`` pointing at the original folder (relative images resolve as in the original)
and a script that, on ``load``, writes each image's ``naturalWidth`` and each table's id and
caption into the DOM; ``--screenshot`` on the original file. Each run gets a fresh profile.

Use from a test: ``from browser import check_page, chromium_or_skip`` (``tests/`` is on
``sys.path`` through its ``conftest.py``).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)
MARKER = "dermlit-browser-check"
#: tallest full-page screenshot (Chromium's texture limit is 16384 px)
MAX_HEIGHT = 16000
_PROBE = f"""<script>
window.addEventListener("load", () => {{
  const images = Array.from(document.images, (img) => ({{
    src: (img.getAttribute("src") || "").slice(0, 80),
    alt: img.getAttribute("alt") || "",
    complete: img.complete,
    naturalWidth: img.naturalWidth,
  }}));
  const tables = Array.from(document.querySelectorAll("table"), (t) => ({{
    id: t.id,
    caption: t.caption ? t.caption.textContent.trim() : "",
  }}));
  const pre = document.createElement("pre");
  pre.id = "{MARKER}";
  const height = document.documentElement.scrollHeight;
  pre.textContent = JSON.stringify({{images, tables, height, title: document.title}});
  document.body.appendChild(pre);
}});
</script>"""


def find_chromium() -> str | None:
    """``$DERMLIT_CHROMIUM``, else the first of :data:`NAMES` on ``PATH``."""
    explicit = os.environ.get("DERMLIT_CHROMIUM")
    if explicit:
        return explicit if shutil.which(explicit) else None
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def chromium_or_skip() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip(
            "headless Chromium not found (looked for $DERMLIT_CHROMIUM, "
            f"{', '.join(NAMES)}): run `make browser` (apt-get install chromium)"
        )
    return path


@dataclass
class Page:
    """What the browser saw: per image ``src``/``alt``/``complete``/``naturalWidth``; per
    table ``id``/``caption``; and where the screenshot went."""

    images: list[dict]
    tables: list[dict]
    title: str
    screenshot: Path | None

    @property
    def broken_images(self) -> list[dict]:
        return [i for i in self.images if not i["complete"] or i["naturalWidth"] <= 0]

    def has_table(self, name: str) -> bool:
        """A table whose id is ``name`` or whose caption contains it."""
        return any(t["id"] == name or name in t["caption"] for t in self.tables)


def _run(chromium: str, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="dermlit-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"chromium timed out after {timeout} s: {' '.join(cmd)}") from err
        except subprocess.CalledProcessError as err:
            tail = (err.stderr or "").strip().splitlines()[-5:]
            raise AssertionError(f"chromium failed ({err.returncode}): {tail}") from err


def render(
    html_path: str | Path,
    screenshot: str | Path | None = None,
    chromium: str | None = None,
    width: int = 1280,
    height: int | None = None,
    timeout: float = 120,
) -> Page:
    """Load ``html_path`` in headless Chromium; optionally write a PNG screenshot, of the whole
    page unless ``height`` is given (headless Chromium captures the window only)."""
    chromium = chromium or chromium_or_skip()
    page = Path(html_path).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"no HTML file at {page}")
    text = page.read_text(encoding="utf-8")
    base = f'<base href="{html.escape(page.parent.as_uri())}/">'
    head = re.search(r"<head[^>]*>", text, flags=re.IGNORECASE)
    probed = (
        text[: head.end()] + base + text[head.end() :] if head else base + text
    ) + _PROBE  # after </html> the parser still appends the script to the body
    with tempfile.TemporaryDirectory(prefix="dermlit-page-") as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(probed, encoding="utf-8")
        dom = _run(
            chromium,
            [
                f"--window-size={width},800",
                "--virtual-time-budget=10000",
                "--dump-dom",
                copy.as_uri(),
            ],
            timeout,
        ).stdout  # the screenshot's width, so that the measured page height is its height
    found = re.search(rf'<pre id="{MARKER}">(.*?)</pre>', dom, flags=re.DOTALL)
    if found is None:
        raise AssertionError(f"{page}: the page's load event never fired in Chromium")
    data = json.loads(html.unescape(found.group(1)))
    shot = None
    if screenshot is not None:
        shot = Path(screenshot).resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        tall = height or min(max(int(data["height"]), 200), MAX_HEIGHT)
        size = f"--window-size={width},{tall}"
        _run(chromium, [size, f"--screenshot={shot}", page.as_uri()], timeout)
        if not shot.is_file() or shot.stat().st_size == 0:
            raise AssertionError(f"chromium wrote no screenshot to {shot}")
    return Page(data["images"], data["tables"], data["title"], shot)


def check_page(
    html_path: str | Path,
    tables: Sequence[str] = (),
    screenshot: str | Path | None = None,
    min_images: int = 1,
) -> Page:
    """Render and assert: at least ``min_images`` images, every one decoded
    (``naturalWidth > 0``), and each of ``tables`` present (by id or caption)."""
    page = render(html_path, screenshot)
    assert len(page.images) >= min_images, (
        f"{html_path}: {len(page.images)} <img> found, expected at least {min_images}"
    )
    assert not page.broken_images, f"{html_path}: images that did not load: {page.broken_images}"
    missing = [t for t in tables if not page.has_table(t)]
    assert not missing, f"{html_path}: tables {missing} missing; found {page.tables}"
    return page
