"""The report model: blocks that each render themselves to Markdown and to HTML (so that
report.md and report.html are one list of blocks and never disagree), and :class:`Report`, the
list that ``report.build_report`` and ``report_sections`` fill."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlit.evaluation.formatting import ci_label, fmt
from dermlit.evaluation.plots import FIGURES


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


@dataclass
class Report:
    """What was written; ``log_report_to_loggers`` logs it."""

    split: str
    out_dir: Path
    blocks: list[Block] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)
    explanations: object | None = None  # explain.review.ErrorExplanations, for the W&B table

    @property
    def markdown_path(self) -> Path:
        return self.out_dir / "report.md"

    @property
    def html_path(self) -> Path:
        return self.out_dir / "report.html"

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(Heading(text, level))

    def text(self, text: str) -> None:
        self.blocks.append(Paragraph(text))

    def table(self, table: Table) -> None:
        self.tables[table.name] = table
        self.blocks.append(table)

    def figure(self, stem: str) -> None:
        if stem in self.images:
            self.blocks.append(Figure(stem, self.images[stem], FIGURES[stem][1]))


def with_ci(a: Any, name: str) -> str:
    """``value [low, high]`` of an ``Analysis`` metric by name (``macro_f1``)."""
    ci = ci_label(a.metrics, a.key(name))
    return fmt(a.get(name)) + (f" {ci}" if ci else "")
