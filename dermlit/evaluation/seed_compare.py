"""``dermlit compare --groups A B``: is configuration A better than B over training seeds?

Two groups of runs (a multirun folder, a folder of run directories, a glob, or a comma-separated
list of those), scored on ONE shared test set, are paired by training seed (``seed`` in each
run's ``.hydra/config.yaml``). For every metric: the per-seed deltas d_s = M(A_s) - M(B_s), their
mean, and an interval that counts both sources of noise: which seeds were trained (seed
variance) and which images happen to be in the test set (test-image sampling).

The interval: a paired t over seeds plus the image bootstrap's SHARED variance. Model
d_s = mu + tau_s + e_s: tau_s the seed effect (variance sigma^2), e = (e_1..e_n) the test-set
sampling errors, correlated across seeds because every run is scored on the same images
(covariance Sigma). Then Var(mean d) = sigma^2/n + 1'Sigma1/n^2, while the sample variance of the
deltas over seeds, s^2, already holds each seed's own image noise: E[s^2/n] = sigma^2/n +
(tr Sigma - 1'Sigma1/n) / (n(n-1)). The difference is exactly c, the mean OFF-diagonal element of
Sigma: the image noise all seeds share, which no spread over seeds can show. So

    SE^2 = s^2/n + max(c, 0),   mean +- t_{df}(1 - alpha/2) * SE,
    df = SE^4 / ((s^2/n)^2 / (n - 1))   (Welch-Satterthwaite, c counted as known),

with Sigma estimated by the stratified image bootstrap of :mod:`dermlit.evaluation.bootstrap`,
ONE resample of the shared test set applied to all 2n runs in each replicate (the same design as
the two-run ``dermlit compare``). SE^2 is unbiased for Var(mean d) whatever Sigma is. When seeds
dominate, df -> n - 1 and this is the exact paired t; when the shared image noise dominates, df
grows and it becomes the normal image-bootstrap interval of the mean delta.

Why not a bootstrap over seeds (resample seeds, then images): with 3 seeds there are only 10
distinct multisets, its percentile interval lies inside [min d_s, max d_s], and the mean of 3
symmetric draws falls inside their range with probability 1 - 2/2^3 = 75 %: a nominal 95 %
interval that covers at most 75 % of the time. It also shrinks the seed variance by (n-1)/n and
has no small-sample (t) correction. The t quantile with n - 1 = 2 degrees of freedom (4.30 vs
1.96) is what honest inference from 3 seeds costs. Assumption: seed effects roughly normal.
"""

from __future__ import annotations

import glob
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from dermlit.constants import CLASSES
from dermlit.evaluation.bootstrap import COMPARED_METRICS, bootstrap_distribution
from dermlit.evaluation.formatting import fmt, interval_text
from dermlit.evaluation.metrics import higher_is_better, point_metrics
from dermlit.evaluation.paired import Predictions, align

#: headline metrics plus every class's recall (recall_mel is in COMPARED_METRICS already)
GROUP_METRICS: tuple[str, ...] = tuple(
    dict.fromkeys([*COMPARED_METRICS, *(f"recall_{c}" for c in CLASSES)])
)
GLOB_CHARS = frozenset("*?[")


class GroupError(ValueError):
    """A group that cannot be compared as it is (no runs, no seed, a seed twice, unpaired)."""


@dataclass
class Run:
    path: Path
    seed: str
    predictions: Predictions


@dataclass
class Group:
    spec: str
    runs: list[Run]

    def by_seed(self) -> dict[str, Run]:
        return {r.seed: r for r in self.runs}


@dataclass
class Pairing:
    pairs: list[tuple[Run, Run]]
    only_a: list[Run] = field(default_factory=list)
    only_b: list[Run] = field(default_factory=list)


def is_run_dir(path: Path) -> bool:
    return (path / "predictions.csv").is_file()


def holds_runs(path: Path) -> bool:
    """A directory of run directories (a multirun's sweep dir), not a run itself."""
    return path.is_dir() and not is_run_dir(path) and any(map(is_run_dir, path.iterdir()))


def _sort_key(path: Path) -> tuple:
    return (path.parent, not path.name.isdigit(), int(path.name) if path.name.isdigit() else 0,
            path.name)  # fmt: skip


def run_dirs(spec: str) -> list[Path]:
    """The run directories a group spec names: comma-separated items, each a run directory, a
    directory of run directories (its direct children: eval/ runs nest deeper), or a glob."""
    found: list[Path] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        paths = sorted(map(Path, glob.glob(item))) if GLOB_CHARS & set(item) else [Path(item)]
        if not paths:
            raise GroupError(f"group {spec!r}: the pattern {item!r} matches nothing")
        for path in paths:
            if is_run_dir(path):
                found.append(path)
            elif holds_runs(path):
                found.extend(sorted(filter(is_run_dir, path.iterdir()), key=_sort_key))
            elif path.is_dir() and not GLOB_CHARS & set(item):
                raise GroupError(
                    f"group {spec!r}: {path} holds no predictions.csv, nor do its subfolders "
                    "(expected a run directory or a multirun folder of them)"
                )
            elif not path.exists():
                raise GroupError(f"group {spec!r}: {path} does not exist")
    if not found:
        raise GroupError(f"group {spec!r} holds no run directories (with a predictions.csv)")
    return list(dict.fromkeys(found))


def is_evaluation(config: dict) -> bool:
    """A dermlit-eval output's config (conf/eval.yaml: ``run_dir`` and ``predictions`` at the
    top), whose ``seed`` is the bootstrap's, not the evaluated training run's."""
    return "run_dir" in config and "predictions" in config


def evaluated_run(path: Path, config: dict) -> Path:
    """The training run a dermlit-eval output evaluated: its ``run_dir``, the run whose
    predictions it re-decided (``predictions=``), or, once outputs/ is gone, the archived layout
    ``<run>/decision_<rule>/`` (its parent)."""
    sources = [config.get("run_dir"), config.get("predictions")]
    candidates = [Path(sources[0])] if sources[0] else []
    candidates += [Path(sources[1]).parent] if sources[1] else []
    for candidate in [*candidates, path.parent]:
        if candidate.resolve() != path.resolve() and (candidate / ".hydra/config.yaml").is_file():
            return candidate
    raise GroupError(
        f"{path} is a dermlit-eval output, and the training run it evaluated "
        f"({', '.join(map(str, candidates)) or 'not named'}) is not there to give its seed: "
        "pass the training run's directory, or copy it next to the evaluation"
    )


def run_seed(path: Path, seed_key: str = "seed") -> str:
    """The TRAINING run's ``seed_key`` (dotted, e.g. ``data.split_seed``) from .hydra/config.yaml,
    or from .hydra/overrides.yaml when the config lacks it; for a run copied without .hydra/
    (e.g. docs/results/<study>/<arm>/seed3/), the ``seed<k>`` of its directory name. A
    dermlit-eval output (a re-decision) takes the seed of the run it evaluated."""
    config_file, overrides_file = path / ".hydra/config.yaml", path / ".hydra/overrides.yaml"
    if config_file.is_file():
        node = yaml.safe_load(config_file.read_text()) or {}
        if is_evaluation(node):
            return run_seed(evaluated_run(path, node), seed_key)
        for part in seed_key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return str(node)
    if overrides_file.is_file():
        for override in yaml.safe_load(overrides_file.read_text()) or []:
            key, _, value = str(override).partition("=")
            if key.lstrip("+~") == seed_key:
                return value
    named = re.fullmatch(r"seed(\d+)", path.name)
    if named and not (config_file.is_file() or overrides_file.is_file()):
        return named.group(1)
    raise GroupError(
        f"no {seed_key!r} for run {path}: neither .hydra/config.yaml nor .hydra/overrides.yaml "
        "names it, nor is the directory called seed<k> (runs are paired by seed; --seed-key "
        "names another config key)"
    )


def load_group(spec: str, seed_key: str = "seed", predictions_are="probabilities") -> Group:
    runs = [
        Run(p, run_seed(p, seed_key), Predictions.load(p, predictions_are)) for p in run_dirs(spec)
    ]
    seen: dict[str, Path] = {}
    for run in runs:
        if run.seed in seen:
            raise GroupError(
                f"group {spec!r} has two runs with {seed_key}={run.seed}: {seen[run.seed]} and "
                f"{run.path}; a group holds one run per seed (split it, or list the runs)"
            )
        seen[run.seed] = run.path
    return Group(spec, runs)


def pair_by_seed(a: Group, b: Group, allow_unpaired: bool = False) -> Pairing:
    """Runs of A and B with the same seed; unpaired seeds are refused unless allowed."""
    seeds_a, seeds_b = a.by_seed(), b.by_seed()
    common = [s for s in seeds_a if s in seeds_b]
    only_a = [r for s, r in seeds_a.items() if s not in seeds_b]
    only_b = [r for s, r in seeds_b.items() if s not in seeds_a]
    if (only_a or only_b) and not allow_unpaired:
        lines = [f"seed {r.seed} only in A ({r.path})" for r in only_a]
        lines += [f"seed {r.seed} only in B ({r.path})" for r in only_b]
        raise GroupError(
            "refusing to compare: runs are paired by seed and some have no partner\n  - "
            + "\n  - ".join(lines)
            + "\n(train the missing seeds, or pass --allow-unpaired to leave these runs out)"
        )
    if len(common) < 2:
        raise GroupError(
            f"{len(common)} seed(s) in both groups (A: {sorted(seeds_a)}, B: {sorted(seeds_b)}): "
            "an interval over seeds needs at least 2 pairs; for one pair use "
            "`dermlit compare RUN_A RUN_B`"
        )
    return Pairing([(seeds_a[s], seeds_b[s]) for s in common], only_a, only_b)


def aligned_probs(pairing: Pairing) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Every run's probabilities in the first run's row order; refuses (``TestSetMismatch``,
    naming the run) any run whose test images or labels differ from the first run's."""
    reference = pairing.pairs[0][0].predictions
    probs_a, probs_b, targets = [], [], reference.targets
    for run_a, run_b in pairing.pairs:
        for run, out in ((run_a, probs_a), (run_b, probs_b)):
            _, probs, targets = align(reference, run.predictions)
            out.append(probs)
    return probs_a, probs_b, targets


def seed_interval(
    deltas: np.ndarray, image_cov: np.ndarray, alpha: float = 0.05
) -> dict[str, float]:
    """The interval of the module docstring from the per-seed deltas (n,) and the bootstrap
    covariance (n, n) of the per-seed deltas over shared image resamples."""
    n = len(deltas)
    if n < 2:
        raise ValueError(f"an interval over seeds needs >= 2 seeds, got {n}")
    mean, s2 = float(np.mean(deltas)), float(np.var(deltas, ddof=1))
    shared = float((image_cov.sum() - np.trace(image_cov)) / (n * (n - 1)))
    seed_part, image_part = s2 / n, max(shared, 0.0)
    se2 = seed_part + image_part
    df = math.inf if seed_part == 0 else se2**2 / (seed_part**2 / (n - 1))
    se = math.sqrt(se2)
    q = (
        float(stats.t.ppf(1 - alpha / 2, df))
        if math.isfinite(df)
        else stats.norm.ppf(1 - alpha / 2)
    )
    if se > 0:
        tail = (
            stats.t.sf(abs(mean) / se, df) if math.isfinite(df) else stats.norm.sf(abs(mean) / se)
        )
        p = float(2 * tail)
    else:
        p = 0.0 if mean != 0 else 1.0
    return {
        "mean_delta": mean,
        "ci_low": mean - q * se,
        "ci_high": mean + q * se,
        "se": se,
        "df": df,
        "p_value": p,
        "seed_sd": math.sqrt(s2),
        "image_shared_var": shared,
        "image_se_per_seed": float(np.sqrt(np.mean(np.diag(image_cov)))),
    }


def _nan_result(n: int) -> dict[str, float]:
    keys = ("mean_delta", "ci_low", "ci_high", "se", "df", "p_value", "seed_sd")
    return dict.fromkeys(keys + ("image_shared_var", "image_se_per_seed"), math.nan) | {"n": n}


def compare_groups(
    a: Group,
    b: Group,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metrics: Sequence[str] = GROUP_METRICS,
    allow_unpaired: bool = False,
) -> dict:
    """JSON-ready: per metric, the means of A and B over seeds, the per-seed deltas, the mean
    delta with its interval (module docstring) and how many seeds favour A."""
    pairing = pair_by_seed(a, b, allow_unpaired)
    probs_a, probs_b, targets = aligned_probs(pairing)
    n = len(pairing.pairs)
    points = [point_metrics(p, targets) for p in probs_a + probs_b]
    unknown = [m for m in metrics if m not in points[0]]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {sorted(points[0])}")
    dists = bootstrap_distribution(probs_a + probs_b, targets, n_resamples, seed)
    out = {}
    for m in metrics:
        va = np.array([points[i][m] for i in range(n)])
        vb = np.array([points[n + i][m] for i in range(n)])
        deltas = va - vb
        row: dict = {
            "a_mean": float(np.mean(va)),
            "b_mean": float(np.mean(vb)),
            "per_seed": [
                {"seed": ra.seed, "a": float(x), "b": float(y), "delta": float(x - y)}
                for (ra, _), x, y in zip(pairing.pairs, va, vb, strict=True)
            ],
            "higher_is_better": higher_is_better(m),
        }
        boot = np.stack([dists[i][m] - dists[n + i][m] for i in range(n)])  # (n, resamples)
        boot = boot[:, ~np.isnan(boot).any(0)]
        if np.isnan(deltas).any() or boot.shape[1] < 2:
            row |= _nan_result(n) | {"seeds_a_better": None}
        else:
            sign = 1.0 if row["higher_is_better"] else -1.0
            row |= seed_interval(deltas, np.cov(boot), alpha)
            row |= {"n": n, "seeds_a_better": int(np.sum(sign * deltas > 0))}
        out[m] = row
    return {
        "mode": "groups",
        "a": a.spec,
        "b": b.spec,
        "n_seeds": n,
        "seeds": [ra.seed for ra, _ in pairing.pairs],
        "runs_a": [str(ra.path) for ra, _ in pairing.pairs],
        "runs_b": [str(rb.path) for _, rb in pairing.pairs],
        "left_out": [f"A seed {r.seed}: {r.path}" for r in pairing.only_a]
        + [f"B seed {r.seed}: {r.path}" for r in pairing.only_b],
        "n_images": int(len(targets)),
        "n_resamples": n_resamples,
        "seed": seed,
        "alpha": alpha,
        "method": "paired t over seeds + shared image-bootstrap variance (Welch-Satterthwaite df)",
        "metrics": out,
    }


COLUMNS = ["metric", "A mean", "B mean", "A - B", "CI", "p", "seeds A better", "per-seed A - B"]


def rows(result: dict) -> list[list[str]]:
    out = []
    for m, r in result["metrics"].items():
        better = "n/a" if r["seeds_a_better"] is None else f"{r['seeds_a_better']}/{r['n']}"
        per_seed = ", ".join(f"{p['seed']}: {fmt(p['delta'], signed=True)}" for p in r["per_seed"])
        direction = "" if r["higher_is_better"] else " (lower is better)"
        out.append(
            [
                m + direction,
                fmt(r["a_mean"]),
                fmt(r["b_mean"]),
                fmt(r["mean_delta"], signed=True),
                interval_text(r["ci_low"], r["ci_high"], signed=True),
                fmt(r["p_value"], 3),
                better,
                per_seed,
            ]
        )
    return out


def method_line(result: dict) -> str:
    pct = f"{100 * (1 - result['alpha']):.0f}%"
    return (
        f"{result['n_seeds']} seed pairs ({', '.join(result['seeds'])}) on {result['n_images']} "
        f"shared test images. {pct} CI of the mean A - B over seeds: paired t over seeds plus the "
        f"image-sampling variance all seeds share (stratified bootstrap, {result['n_resamples']} "
        f"resamples, seed {result['seed']}, one resample for all runs), Welch-Satterthwaite df; "
        "p: two-sided, mean A - B = 0."
    )


def markdown(result: dict) -> str:
    lines = [
        "# dermlit compare --groups",
        "",
        f"A: `{result['a']}`  ",
        f"B: `{result['b']}`  ",
        method_line(result),
    ]
    if result["left_out"]:
        lines.append("Unpaired, left out: " + "; ".join(f"`{x}`" for x in result["left_out"]))
    lines += [
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + " --- |" * len(COLUMNS),
        *("| " + " | ".join(r) + " |" for r in rows(result)),
        "",
        "Runs (A | B): "
        + "; ".join(
            f"seed {s}: `{x}` | `{y}`"
            for s, x, y in zip(result["seeds"], result["runs_a"], result["runs_b"], strict=True)
        ),
    ]
    return "\n".join(lines) + "\n"
