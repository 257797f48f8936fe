"""One ``dermlit-eval`` output directory holds one evaluation (conf/eval.yaml's callback).

The default output directory, ``RUN/eval/<split>-<checkpoint>[-<weights>]``, does not name
``tta``, ``posthoc``, the cost matrix or any other setting. ``dermlit-eval run_dir=RUN
posthoc=logit_adjust`` and a later plain ``dermlit-eval run_dir=RUN`` therefore wrote into one
folder, and the second replaced the first's metrics.json, predictions.csv and report without a
word. Hydra records each evaluation's overrides in ``OUTPUT_DIR/.hydra/overrides.yaml``; an
evaluation whose overrides differ from the recorded ones is refused before anything is loaded
or written, unless ``overwrite=true``. The same command again replaces its own output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dermlit.errors import exit_with

#: overrides that say where the output goes or whether it may be replaced, not what it holds
NOT_SETTINGS = ("output_dir", "overwrite")


def settings_of(overrides: list[str]) -> list[str]:
    """The overrides that decide what an evaluation holds, sorted (their order is immaterial)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    kept = [
        line
        for line, o in zip(overrides, parsed, strict=True)
        if not o.is_hydra_override() and o.key_or_group.lstrip("+~") not in NOT_SETTINGS
    ]
    return sorted(kept)


def other_evaluation(out_dir: Path, overrides: list[str]) -> str | None:
    """What ``out_dir`` already holds when it is not the evaluation these ``overrides`` make
    (``None``: nothing, or this same evaluation). An evaluation whose overrides record is
    missing or unreadable is another one too: what it holds cannot be known, so it is not
    replaced without ``overwrite=true``."""
    recorded = out_dir / ".hydra" / "overrides.yaml"
    if not (out_dir / "metrics.json").is_file():
        return None
    if not recorded.is_file():
        return f"its settings are not recorded: no {recorded}"
    try:
        previous = yaml.safe_load(recorded.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return f"its settings cannot be read: {recorded}: {type(exc).__name__}"
    if not isinstance(previous, list | type(None)):
        return f"its settings cannot be read: {recorded} is not a list of overrides"
    try:
        before = settings_of([str(o) for o in previous or []])
    except Exception as exc:  # an override Hydra cannot parse: a hand-edited record
        return f"its settings cannot be read: {recorded}: {exc}"
    if before == settings_of(overrides):
        return None
    return " ".join(before) or "no overrides"


class EvalOutputGuard(Callback):
    """Refuses, in one line (exit 2), an evaluation into a directory that holds another one."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("overwrite"):
            return
        out_dir = Path(str(config.hydra.run.dir))
        overrides = [str(o) for o in config.hydra.overrides.task]
        before = other_evaluation(out_dir, overrides)
        if before is not None:
            now = settings_of(overrides)
            exit_with(
                "dermlit-eval",
                f"{out_dir} holds another evaluation ({before}), "
                f"not this one ({' '.join(now) or 'no overrides'}): give this one its own "
                "output_dir=DIR, or overwrite=true to replace it",
            )
