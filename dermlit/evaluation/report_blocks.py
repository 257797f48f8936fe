"""The blocks of the evaluation report: each renders itself to Markdown and to HTML, so that
report.md and report.html are one list of blocks and never disagree."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Heading:
    text: str
    level: int = 2

    def to_markdown(self) -> str:
        return "#" * self.level + " " + self.text

    def to_html(self) -> str:
        return f"<h{self.level}>{html.escape(self.text)}</h{self.level}>"


@dataclass
class Paragraph:
    text: str

    def to_markdown(self) -> str:
        return self.text

    def to_html(self) -> str:
        return f"<p>{html.escape(self.text)}</p>"


@dataclass
class Table:
    """A table of preformatted strings (also logged to W&B by name)."""

    name: str
    caption: str
    frame: pd.DataFrame
    highlight: np.ndarray | None = None  # bool mask of the frame's cells

    def to_markdown(self) -> str:
        cells = self.frame.to_numpy(dtype=str)
        if self.highlight is not None:
            cells = np.where(self.highlight, np.char.add(np.char.add("**", cells), "**"), cells)
        lines = [f"*{self.caption}*", "", "| " + " | ".join(map(str, self.frame.columns)) + " |"]
        lines.append("|" + " --- |" * len(self.frame.columns))
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in self.frame.columns)
        rows = []
        for i, row in enumerate(self.frame.to_numpy(dtype=str)):
            cells = []
            for j, v in enumerate(row):
                hot = self.highlight is not None and self.highlight[i, j]
                attr = ' class="hot"' if hot else ""
                cells.append(f"<td{attr}>{html.escape(v)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        caption = f"<caption>{html.escape(self.caption)}</caption>"
        body = "".join(rows)
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Figure:
    """A PNG of ``report/``: linked from report.md, embedded (base64) in report.html."""

    stem: str
    path: Path
    caption: str

    def to_markdown(self) -> str:
        return f"![{self.caption}]({self.path.name})"

    def to_html(self) -> str:
        data = base64.b64encode(self.path.read_bytes()).decode("ascii")
        caption = html.escape(self.caption)
        return (
            f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )


Block = Heading | Paragraph | Table | Figure
