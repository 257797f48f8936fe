"""``dermlit-eval`` refuses command-line overrides it would ignore.

An evaluation's model, trainer, loss, optimiser, image size and normalisation come from the
run's own config (``RUN/.hydra/resolved.yaml``), not from conf/eval.yaml. Hydra's ``+key=value``
adds any key to a config, so ``dermlit-eval run_dir=RUN +model.backbone.name=resnet34`` is
accepted by Hydra and the run's resnet18 is evaluated under the new name. This refuses such an
override before anything runs, naming it and saying where that setting comes from.

What counts as known is read from the eval config composed WITHOUT the user's additions (no
list of keys is kept here): an added key (``+a.b=v``, ``++a.b=v`` for a new key) is known when
its parent already exists below the root, e.g. ``+evaluation.referral_targets.accuracy=0.9``
or ``+data.source.column_map.SCC=akiec`` (entries of a dict option). Known keys that the chosen
mode would not read are refused too: ``checkpoint``/``weights``/``tta``/``data`` with
``predictions=`` (no model is run), ``val_predictions``/``predictions_are``/``metadata`` with
``run_dir=`` (a run's data source brings its own metadata),
and ``data.*`` or ``data/*`` (a group under data, e.g. ``data/split=by_source``) other than
:data:`EVAL_DATA_KEYS` (the rest comes from the run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dermlit.errors import exit_with

#: what ``dermlit-eval data=...`` takes from the data option; the rest (image size,
#: normalisation, batch sizes) comes from the run, so that the model sees what it was trained on
EVAL_DATA_KEYS = ("source", "cache_dir", "on_error")
#: top-level keys read only when evaluating a checkpoint (run_dir=), and only with predictions=
CHECKPOINT_ONLY = ("checkpoint", "weights", "tta", "data", "accelerator")
PREDICTIONS_ONLY = ("val_predictions", "predictions_are", "metadata")
#: top-level keys that exist only for data/_base.yaml's interpolations (the run's own are used;
#: ``colour_constancy=X`` is refused by Hydra, ``+colour_constancy=X`` as an unknown addition)
RUN_ONLY = ("sampler", "colour_constancy")


_MISSING = object()


def _top(override: Override) -> str:
    return override.key_or_group.split(".")[0].split("/")[0]


def _describe(override: Override) -> str:
    return override.input_line or override.get_key_element()


def _unknown_addition(override: Override, base: DictConfig) -> bool:
    """An added key whose parent is not in ``base`` (or is the root): conf/eval.yaml does not
    define it, so nothing reads it."""
    key = override.key_or_group
    if override.is_force_add() and OmegaConf.select(base, key, default=_MISSING) is not _MISSING:
        return False  # ++key=v on an existing key is a plain override
    if "/" in key:  # +group=option: a config group not in eval's defaults
        return True
    parent = key.rpartition(".")[0]
    return not parent or OmegaConf.select(base, parent, default=_MISSING) is _MISSING


def refused_overrides(overrides: Sequence[str], base: DictConfig) -> list[str]:
    """One line per override ``dermlit-eval`` would ignore, or per missing/conflicting mode
    (neither or both of ``run_dir``/``predictions``); empty: the command is used as given.

    ``base``: the eval config composed with ``overrides`` minus the additions, i.e. what
    conf/eval.yaml and its chosen groups define.
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    parsed = [o for o in parsed if not o.is_hydra_override()]
    run_dir = base.get("run_dir")
    resolved = f"{run_dir or 'RUN'}/.hydra/resolved.yaml"
    lines, unknown = [], False
    if not base.get("run_dir") and not base.get("predictions"):
        lines.append("give run_dir=RUN (evaluate its checkpoint) or predictions=FILE")
    if base.get("run_dir") and base.get("predictions"):
        lines.append(
            "give run_dir=RUN (evaluate a checkpoint) or predictions=FILE (re-evaluate a "
            "predictions.csv), not both"
        )
    for o in parsed:
        top, text = _top(o), _describe(o)
        if (o.is_add() or o.is_force_add()) and _unknown_addition(o, base):
            lines.append(
                f"{text}: conf/eval.yaml defines no {o.key_or_group!r}, so dermlit-eval would "
                f"ignore it. The model, trainer, loss and optimiser come from the run "
                f"({resolved}); to evaluate another model, train it with dermlit-train and "
                "evaluate that run"
            )
            unknown = True
        elif top == "data" and base.get("predictions"):
            pass  # reported with the other checkpoint-only keys below
        elif top == "data" and ("." in o.key_or_group or "/" in o.key_or_group):
            # data.split.seed=1 and data/split=by_source alike: the run's split is used
            sub = o.key_or_group.replace("/", ".").split(".")[1]
            if sub not in EVAL_DATA_KEYS:
                lines.append(
                    f"{text}: data.{sub} comes from the run ({resolved}), so that the model "
                    "sees images prepared as in training; dermlit-eval takes only "
                    f"{', '.join(f'data.{k}' for k in EVAL_DATA_KEYS)} from data="
                )
        if base.get("predictions") and top in CHECKPOINT_ONLY:
            lines.append(
                f"{text}: with predictions= no model is run, so {', '.join(CHECKPOINT_ONLY)} "
                "are ignored; drop it, or evaluate the run's checkpoint with run_dir=RUN"
            )
        elif not base.get("predictions") and top in PREDICTIONS_ONLY:
            lines.append(
                f"{text}: read only with predictions=FILE; with run_dir= the validation "
                "outputs come from the run's checkpoint"
            )
    if unknown:
        lines.append(f"dermlit-eval's own settings (conf/eval.yaml): {', '.join(settings(base))}")
    return lines


def settings(base: DictConfig) -> list[str]:
    """The top-level keys and config groups of the composed eval config (Hydra's own aside)."""
    choices = base.hydra.runtime.choices if "hydra" in base else {}
    groups = {g for g in choices if not g.startswith("hydra") and g != "local"}
    return sorted({k for k in base if k != "hydra" and k not in RUN_ONLY} | groups)


def base_config(overrides: Sequence[str], config_name: str) -> DictConfig:
    """The eval config (and its ``hydra`` node, for the groups chosen) composed without the
    additions among ``overrides`` (needs Hydra's
    global state, as inside a ``@hydra.main`` app or ``initialize_config_dir``)."""
    from hydra import compose

    parser = OverridesParser.create()
    kept = [
        line
        for line, o in zip(overrides, parser.parse_overrides(list(overrides)), strict=True)
        if not (o.is_add() or o.is_force_add()) and not o.is_hydra_override()
    ]
    return compose(config_name=config_name, overrides=kept, return_hydra_config=True)


class RefuseIgnoredOverrides(Callback):
    """conf/eval.yaml ``hydra.callbacks``: refuse before the output directory is created."""

    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kw: Any) -> None:
        overrides = [str(o) for o in config.hydra.overrides.task]
        lines = refused_overrides(overrides, base_config(overrides, config_name or "eval"))
        if lines:
            exit_with("dermlit-eval", "refusing the command:\n  - " + "\n  - ".join(lines))

    def on_job_start(self, config: DictConfig, **kw: Any) -> None:
        """A multirun's job (its own overrides, no sweep syntax left) is checked as it starts."""
        if config.hydra.mode == RunMode.MULTIRUN:
            self.on_run_start(config, config.hydra.job.config_name)
