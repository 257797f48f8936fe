"""What ``conf/evaluation/`` configures: the cost matrix, bootstrap and calibration settings,
the common classes and the referral targets.

The values have ONE source, the config group: ``instantiate(cfg.evaluation)`` builds an
:class:`EvalSettings` (``_target_`` in ``conf/evaluation/default.yaml``, the cost matrix from
``conf/evaluation/cost/``); code outside a Hydra app composes the same files
(:meth:`EvalSettings.defaults`, :func:`load_cost`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dermlit.constants import CLASSES
from dermlit.evaluation.decisions import TARGET_METRICS


@dataclass(frozen=True)
class CostMatrix:
    """``matrix[true, decided]`` in ``CLASSES`` order."""

    name: str
    matrix: np.ndarray

    @classmethod
    def from_table(
        cls,
        matrix: Sequence[Sequence[float]],
        classes: Sequence[str] = CLASSES,
        name: str = "custom",
    ) -> CostMatrix:
        """A square ``matrix`` whose rows (true) and columns (decided) follow ``classes``
        (``conf/evaluation/cost/*.yaml``), reordered here into ``CLASSES`` order."""
        classes = list(classes)
        if sorted(classes) != sorted(CLASSES):
            raise ValueError(f"cost classes must be a permutation of {list(CLASSES)}: {classes}")
        m = np.asarray([list(row) for row in matrix], dtype=np.float64)
        if m.shape != (len(CLASSES), len(CLASSES)):
            raise ValueError(f"cost matrix {name!r} must be 7x7, got {m.shape}")
        if np.any(np.diag(m) != 0) or np.any(m < 0):
            raise ValueError(f"cost matrix {name!r}: need a zero diagonal, costs >= 0")
        order = [classes.index(c) for c in CLASSES]
        return cls(str(name), m[np.ix_(order, order)])

    @classmethod
    def from_config(cls, node: Mapping) -> CostMatrix:
        """From a cost node (``name``, ``matrix``, optional ``classes``), with or without its
        ``_target_``."""
        return cls.from_table(**{k: v for k, v in node.items() if k != "_target_"})


def load_cost(name: str) -> CostMatrix:
    """A cost matrix of ``conf/evaluation/cost/`` by name, composed by Hydra."""
    from hydra.utils import instantiate

    from dermlit.config import CONF_DIR, compose_config, group_options

    known = group_options("evaluation/cost")
    if name not in known:
        folder = CONF_DIR / "evaluation" / "cost"
        raise FileNotFoundError(f"no cost matrix {name!r} in {folder}; known: {known}")
    return instantiate(compose_config(None, [f"+evaluation/cost={name}"]).evaluation.cost)


@dataclass(frozen=True)
class EvalSettings:
    """``conf/evaluation/``, instantiated (every field comes from the config: no defaults here).

    n_resamples, seed: the bootstrap's (the root config's ``bootstrap_resamples`` and ``seed``).
    referral_score: the deferral score ``dermlit predict`` refers by.
    conformal: ``{alpha}``, the miscoverage of the conformal sets.
    subgroups: ``{columns, min_size}``, the metadata columns measured per subgroup and the size
        below which a group is flagged.
    adabn: re-estimate BatchNorm statistics on the (unlabelled) test images before predicting
        them (``models/adabn.py``); validation keeps the training statistics.
    figures: write the report's PNG figures; off, the report says so and keeps its tables.
    """

    cost: CostMatrix
    common_classes: tuple[str, ...]
    referral_targets: Mapping[str, float]
    n_resamples: int
    seed: int
    alpha: float
    n_bins: int
    referral_score: str
    conformal: Mapping[str, float]
    subgroups: Mapping[str, Any]
    adabn: bool
    figures: bool

    @property
    def conformal_alpha(self) -> float:
        return float(self.conformal["alpha"])

    @property
    def subgroup_columns(self) -> tuple[str, ...]:
        return tuple(self.subgroups["columns"])

    @property
    def subgroup_min_size(self) -> int:
        return int(self.subgroups["min_size"])

    def __post_init__(self) -> None:
        common = tuple(str(c) for c in self.common_classes)
        targets = dict(self.referral_targets)
        conformal = {"alpha": float(self.conformal["alpha"])}
        subgroups = {
            "columns": tuple(str(c) for c in self.subgroups["columns"]),
            "min_size": int(self.subgroups["min_size"]),
        }
        unknown, bad_targets = set(common) - set(CLASSES), set(targets) - set(TARGET_METRICS)
        if unknown or bad_targets:
            raise ValueError(
                f"evaluation: unknown common_classes {sorted(unknown)} or referral_targets "
                f"{sorted(bad_targets)} (known: {list(CLASSES)}, {list(TARGET_METRICS)})"
            )
        for name, value in (
            ("common_classes", common),
            ("referral_targets", targets),
            ("n_resamples", int(self.n_resamples)),
            ("seed", int(self.seed)),
            ("alpha", float(self.alpha)),
            ("n_bins", int(self.n_bins)),
            ("referral_score", str(self.referral_score)),
            ("conformal", conformal),
            ("subgroups", subgroups),
            ("adabn", bool(self.adabn)),
            ("figures", bool(self.figures)),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def defaults(cls, **changes: Any) -> EvalSettings:
        """``conf/evaluation/default.yaml`` as ``dermlit-train`` composes it, with ``changes``
        (``EvalSettings.defaults(n_resamples=100)``): for code and tests outside Hydra."""
        from hydra.utils import instantiate

        from dermlit.config import compose_config

        settings = instantiate(compose_config("train").evaluation)
        return dataclasses.replace(settings, **changes) if changes else settings

    @classmethod
    def from_config(
        cls, node: Mapping | None, n_resamples: int | None = None, seed: int | None = None
    ) -> EvalSettings:
        """An ``evaluation`` node as composed or resolved, e.g. a run's ``.hydra/resolved.yaml``
        (``dermlit predict``), also one written before the group had a ``_target_`` or some of
        its keys: what the node lacks is the defaults' (:meth:`defaults`, the config group);
        None: the defaults. ``n_resamples``/``seed`` replace the node's."""
        changes = {k: v for k, v in (("n_resamples", n_resamples), ("seed", seed)) if v is not None}
        defaults = cls.defaults()
        if node is None:
            return dataclasses.replace(defaults, **changes) if changes else defaults
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in dict(node).items() if k in names}
        if "cost" in given:
            given["cost"] = CostMatrix.from_config(given["cost"])
        return dataclasses.replace(defaults, **{**given, **changes})
