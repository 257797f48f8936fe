"""Saving notebook/report figures: one PNG per name, shown when a display exists."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt


class FigureSaver:
    """``save(fig, name)`` writes ``out/<name>.png`` and remembers it in ``figures``."""

    def __init__(self, out: str | Path, dpi: int = 110) -> None:
        self.out = Path(out)
        self.dpi = dpi
        self.figures: dict[str, Path] = {}

    def __call__(self, fig: plt.Figure, name: str) -> Path:
        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=self.dpi, bbox_inches="tight")
        self.figures[name] = path
        if matplotlib.get_backend().lower() == "agg":
            plt.close(fig)
        else:
            plt.show()
        return path
