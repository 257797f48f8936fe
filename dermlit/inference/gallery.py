"""``dermlit predict --html``: one self-contained page, a card per image (the decoded, cropped
image as a thumbnail, before any colour constancy the model applies, as the clinician sees it;
top-3 probabilities, the conformal set, the decision and referral, or the error)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dermlit.constants import ISIC_COLUMNS

STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ccc;border-radius:6px;
padding:8px;width:230px}.card img{width:128px;height:128px;image-rendering:auto}
.card.refer{border-color:#d33}.card.error{background:#fee}table{border-collapse:collapse;
font-size:90%}td{padding:1px 6px}.name{font-weight:bold;word-break:break-all}.why{color:#a00;
font-size:85%}"""


def _card(row: pd.Series, thumbnail: bytes | None) -> str:
    name = html.escape(str(row["image"]))
    if row["error"]:
        return (
            f'<div class="card error"><div class="name">{name}</div>'
            f'<div class="why">{html.escape(str(row["error"]))}</div></div>'
        )
    probs = {c.lower(): float(row[c]) for c in ISIC_COLUMNS}
    top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
    rows = "".join(f"<tr><td>{c}</td><td>{p:.3f}</td></tr>" for c, p in top)
    img = ""
    if thumbnail is not None:
        data = base64.b64encode(thumbnail).decode("ascii")
        img = f'<img alt="{name}" src="data:image/jpeg;base64,{data}">'
    refer = bool(row["refer"])
    lines = [
        f'<div class="card{" refer" if refer else ""}"><div class="name">{name}</div>{img}',
        f'<table class="top3"><caption>top-3</caption>{rows}</table>',
        f"<div>set: <b>{html.escape(str(row['prediction_set']) or '(empty)')}</b> "
        f"(size {row['set_size']})</div>",
        f"<div>decision: <b>{html.escape(str(row['decision']))}</b></div>",
    ]
    if refer:
        lines.append(f'<div class="why">refer: {html.escape(str(row["refer_reason"]))}</div>')
    if row["note"]:
        lines.append(f'<div class="why">note: {html.escape(str(row["note"]))}</div>')
    return "\n".join(lines) + "</div>"


def write_gallery(
    path: str | Path, table: pd.DataFrame, thumbnails: Sequence[bytes | None], title: str
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cards = [
        _card(row, thumb) for (_, row), thumb in zip(table.iterrows(), thumbnails, strict=True)
    ]
    n_err = int((table["error"] != "").sum())
    n_ref = int(np.asarray(table["refer"], dtype=bool).sum())
    summary = f"{len(table)} images, {n_ref} referred, {n_err} without a prediction."
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{summary}</p>"
        f'<div class="grid">\n' + "\n".join(cards) + "\n</div></body></html>\n"
    )
    path.write_text(page)
    return path
