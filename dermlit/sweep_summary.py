"""``dermlit sweep-summary MULTIRUN_DIR``: which configuration of a multirun is best, and how sure.

Reads every job directory of a Hydra multirun (``.hydra/overrides.yaml`` + ``metrics.json``),
groups the jobs by configuration (their overrides without the seed) and writes one table, as
markdown and CSV, with the mean and a 95% t-interval over seeds of the headline test metrics,
sorted by macro-F1, plus a PNG of the same. Neither Hydra nor W&B summarise a sweep over seeds
with uncertainty. Failed jobs (no metrics.json or an unreadable one, or an error.log written by
:class:`dermlit.hydra_callbacks.JobErrorFile`) are listed, and counted per configuration.
A job whose ``status.json`` (:mod:`dermlit.status`) says ``preempted`` or ``running`` is not a
failed one: it is listed and counted as unfinished, with the command that continues it; a
``running`` job whose process is gone (killed without a chance to write) is a failed one.

The interval is over seeds (training randomness), not over test images (the per-run bootstrap
CIs in metrics.json): mean +- t(0.975, n-1) * sd / sqrt(n). With one seed it is undefined and
shown as ``(n=1)`` (blank in the CSV). Bounds are not clipped to [0, 1]: an interval past
them says how little a few seeds pin the mean down. A metric that is null in a job's
metrics.json (e.g. the melanoma recall of a test split without melanoma) is left out of that
metric's mean only. A configuration is labelled by the overrides that differ between jobs; the
ones all jobs share are printed once above the table.

The summary ends with one ``dermlit compare --groups`` command per configuration against the
``(defaults)`` row (or, without one, the best row): the effect over seeds with an interval that
also counts test-image sampling (:mod:`dermlit.evaluation.seed_compare`). It names the finished
runs of the seeds both configurations finished (compare pairs runs by seed), and says which
seeds it left out.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from dermlit.constants import CLASSES
from dermlit.errors import exit_with
from dermlit.evaluation.formatting import fmt, value_with_interval
from dermlit.hydra_callbacks import ERROR_FILE
from dermlit.status import effective_state, read_status

#: summary column -> label in the markdown table and the plot
METRICS: dict[str, str] = {
    "macro_f1": "macro-F1",
    "balanced_accuracy": "balanced accuracy",
    "recall_mel": "melanoma recall",
    "min_recall": "min per-class recall",
    "ece": "ECE",
}


#: status.json states of a job that has not ended for good (it can be continued)
UNFINISHED = ("preempted", "running")


@dataclass
class Job:
    """One job directory: its overrides, seed and headline metrics, or why it has none;
    ``state`` is its status.json's (None without one)."""

    path: Path
    overrides: list[str]
    seed: str | None
    metrics: dict[str, float] | None
    error: str | None = None
    state: str | None = None

    @property
    def unfinished(self) -> bool:
        return self.metrics is None and self.state in UNFINISHED

    @property
    def failed(self) -> bool:
        return self.metrics is None and not self.unfinished

    @property
    def status(self) -> str:
        """ok | failed | preempted | running"""
        return "ok" if self.metrics is not None else self.state if self.unfinished else "failed"


def override_key(override: str) -> str:
    """``+seed=1`` / ``++seed=1`` / ``seed=1`` -> ``seed``."""
    return override.split("=", 1)[0].lstrip("+~")


def headline(metrics: Mapping[str, float | None], split: str = "test") -> dict[str, float]:
    """The summary's metrics of one job; the minimum recall is over the classes it has."""
    value = {k: metrics.get(f"{split}/{k}") for k in METRICS if k != "min_recall"}
    recalls = [metrics.get(f"{split}/recall_{cls}") for cls in CLASSES]
    recalls = [r for r in recalls if r is not None and math.isfinite(r)]
    value["min_recall"] = min(recalls) if recalls else None
    return {k: float("nan") if v is None else float(v) for k, v in value.items()}


def error_summary(text: str) -> str:
    """The exception line of a traceback (its last non-empty line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "error.log is empty"


def read_job(path: Path, seed_key: str = "seed", split: str = "test") -> Job:
    overrides = [str(o) for o in yaml.safe_load((path / ".hydra/overrides.yaml").read_text()) or []]
    seed = next((o.split("=", 1)[1] for o in overrides if override_key(o) == seed_key), None)
    if seed is None and (path / ".hydra/config.yaml").is_file():
        config = yaml.safe_load((path / ".hydra/config.yaml").read_text()) or {}
        seed = None if config.get(seed_key) is None else str(config[seed_key])
    rest = [o for o in overrides if override_key(o) != seed_key]
    error_file, metrics_file = path / ERROR_FILE, path / "metrics.json"
    status = read_status(path)
    state = effective_state(status)
    if state in UNFINISHED:  # newer than an error.log of an earlier attempt
        return Job(path, rest, seed, None, unfinished_reason(path, status or {}), state)
    if error_file.is_file():
        return Job(path, rest, seed, None, error_summary(error_file.read_text()), state)
    if state == "died":
        reason = (
            f"status.json says running, but its process (PID {status.get('pid')}) is gone: "
            "killed without a chance to write (out of memory? SIGKILL?); see its train.log"
        )
        return Job(path, rest, seed, None, reason, state)
    if state == "failed" and not metrics_file.is_file():
        return Job(path, rest, seed, None, str(status.get("error") or "failed"), state)
    if not metrics_file.is_file():
        reason = "no metrics.json: the job did not finish (see its train.log)"
        return Job(path, rest, seed, None, reason, state)
    try:
        metrics = json.loads(metrics_file.read_text())
    except ValueError as err:  # truncated (a job killed mid-write) or not JSON at all
        return Job(path, rest, seed, None, f"{metrics_file} is not valid JSON: {err}", state)
    if not isinstance(metrics, dict):
        reason = f"{metrics_file} is not a JSON object of metrics: {type(metrics).__name__}"
        return Job(path, rest, seed, None, reason, state)
    return Job(path, rest, seed, headline(metrics, split), None, state)


def status_age(status: dict) -> str:
    """How long ago status.json was written, e.g. ``5.0 h ago`` (empty when it says no time)."""
    try:
        updated = datetime.fromisoformat(str(status["updated"]))
    except (KeyError, ValueError):
        return ""
    hours = (datetime.now(updated.tzinfo) - updated).total_seconds() / 3600
    return f"{hours:.1f} h ago" if hours >= 1 else f"{hours * 60:.0f} min ago"


def unfinished_reason(path: Path, status: dict) -> str:
    """A running job rewrites its status every epoch: one written long ago on another host
    (whose PID cannot be checked from here) may have died without a chance to say so."""
    where = f"at epoch {status.get('epoch')}, step {status.get('step')}"
    age = status_age(status)
    since = f" (status of {status.get('updated')}, {age})" if age else ""
    if status.get("state") == "preempted":
        return f"preempted {where}{since}: continue with `dermlit-train resume={path}`"
    reason = f"running {where}{since}, PID {status.get('pid')} on {status.get('host')}"
    if status.get("host") != socket.gethostname():
        reason += (
            ": another host, whose process cannot be checked from here; a status older than "
            "an epoch means the job may have died without a chance to say so"
        )
    return reason


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Hydra job directories directly below the sweep dir (eval/ runs nest deeper)."""
    dirs = [d for d in sweep_dir.iterdir() if (d / ".hydra" / "overrides.yaml").is_file()]
    return sorted(
        dirs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name)
    )


def read_jobs(sweep_dir: str | Path, seed_key: str = "seed", split: str = "test") -> list[Job]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a directory")
    dirs = job_dirs(sweep_dir)
    if not dirs:
        raise FileNotFoundError(
            f"no job directories in {sweep_dir}: expected subdirectories with .hydra/overrides.yaml"
            " (the hydra.sweep.dir of a `dermlit-train -m ...` run)"
        )
    return [read_job(d, seed_key, split) for d in dirs]


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and t-interval of the finite values; NaN bounds below 2 values, NaN mean at 0."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def configuration_labels(jobs: Sequence[Job]) -> tuple[list[str], list[str]]:
    """Each job's label from the overrides that differ between jobs; and those shared by all."""
    parsed = [dict(o.split("=", 1) if "=" in o else (o, "") for o in job.overrides) for job in jobs]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    common = [f"{k}={parsed[0][k]}" if parsed[0][k] else k for k in keys if k not in varying]
    labels = [",".join(f"{k}={p[k]}" for k in varying if k in p) or "(defaults)" for p in parsed]
    if not varying:
        labels = [",".join(common) or "(defaults)"] * len(jobs)
    return labels, common


def summarise(jobs: Sequence[Job], confidence: float = 0.95) -> pd.DataFrame:
    """One row per configuration, sorted by mean macro-F1 (configurations without a
    successful job last)."""
    labels, _ = configuration_labels(jobs)
    rows = []
    for label in dict.fromkeys(labels):
        group = [j for j, lab in zip(jobs, labels, strict=True) if lab == label]
        done = [j for j in group if j.metrics is not None]
        row = {
            "configuration": label,
            "n_seeds": len(done),
            "n_failed": sum(j.failed for j in group),
            "n_unfinished": sum(j.unfinished for j in group),
            "seeds": ",".join(str(j.seed) for j in done),
        }
        for key in METRICS:
            mean, low, high = t_interval([j.metrics[key] for j in done], confidence)
            row |= {f"{key}_mean": mean, f"{key}_ci_low": low, f"{key}_ci_high": high}
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values("macro_f1_mean", ascending=False, na_position="last", kind="stable")


def jobs_frame(jobs: Sequence[Job]) -> pd.DataFrame:
    """Every job, its status and metrics: for analyses the table averages away."""
    labels, _ = configuration_labels(jobs)
    rows = []
    for job, label in zip(jobs, labels, strict=True):
        row = {"job": job.path.name, "configuration": label, "seed": job.seed}
        row |= {"status": job.status, "error": job.error or ""}
        rows.append(row | (job.metrics or dict.fromkeys(METRICS, math.nan)))
    return pd.DataFrame(rows)


def cell(row: Mapping, key: str) -> str:
    mean, low, high = row[f"{key}_mean"], row[f"{key}_ci_low"], row[f"{key}_ci_high"]
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(low):
        return f"{fmt(mean)} (n=1)"
    return value_with_interval(mean, low, high)


def to_markdown(
    table: pd.DataFrame, jobs: Sequence[Job], sweep_dir: Path, confidence: float = 0.95
) -> str:
    _, common = configuration_labels(jobs)
    pct = f"{100 * confidence:g}%"
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"Mean over seeds [{pct} t-interval over seeds] of the test metrics, sorted by macro-F1;"
        " `(n=1)`: one seed, no interval.",
    ]
    if common:
        lines.append(f"Overrides shared by all jobs: `{' '.join(common)}`")
    header = ["configuration", "seeds", "failed", "unfinished", *METRICS.values()]
    lines += ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in table.to_dict("records"):
        counts = [str(row[k]) for k in ("n_seeds", "n_failed", "n_unfinished")]
        cells = [f"`{row['configuration']}`", *counts]
        lines.append("| " + " | ".join(cells + [cell(row, k) for k in METRICS]) + " |")
    commands = compare_commands(table, jobs)
    if commands:
        lines += [
            "",
            "## Effects over seeds",
            "",
            f"Each configuration against `{commands[0][1]}`, paired by seed over the seeds both"
            " finished (test-image sampling counted too):",
            "",
        ]
        for label, _, command, note in commands:
            lines.append(f"- `{label}`: `{command}`" if command else f"- `{label}`: {note}")
            if command and note:
                lines.append(f"  ({note})")
    failed = [j for j in jobs if j.failed]
    lines += ["", f"## Failed jobs: {len(failed)} of {len(jobs)}", ""]
    lines += [
        f"- `{j.path.name}` `{' '.join(j.overrides)}` seed={j.seed}: {j.error}" for j in failed
    ]
    if not failed:
        lines.append("none")
    unfinished = [j for j in jobs if j.unfinished]
    if unfinished:
        lines += [
            "",
            f"## Unfinished jobs (preempted or running): {len(unfinished)} of {len(jobs)}",
        ]
        lines += [""] + [
            f"- `{j.path.name}` `{' '.join(j.overrides)}` seed={j.seed}: {j.error}"
            for j in unfinished
        ]
    return "\n".join(lines) + "\n"


def compare_commands(table: pd.DataFrame, jobs: Sequence[Job]) -> list[tuple[str, str, str, str]]:
    """``(configuration, reference, command, note)``: ``dermlit compare --groups`` of each
    configuration against the ``(defaults)`` row, or the best row when there is none, for
    configurations with >= 2 finished runs (status ``ok``: a metrics.json of this attempt, so
    no preempted or running job's older files) that wrote predictions.csv.

    ``dermlit compare`` pairs the runs by seed and refuses a seed without a partner, so each
    command names only the runs of the seeds BOTH configurations finished; ``note`` says which
    seeds were left out ("" when none), or, with fewer than 2 such seeds, why there is no
    command (``command`` is then "")."""
    labels, _ = configuration_labels(jobs)
    runs: dict[str, dict[str, str]] = {}  # configuration -> seed -> run directory
    for job, label in zip(jobs, labels, strict=True):
        if job.status == "ok" and (job.path / "predictions.csv").is_file():
            runs.setdefault(label, {}).setdefault(str(job.seed), str(job.path))
    order = [c for c in table["configuration"] if len(runs.get(c, {})) >= 2]
    if len(order) < 2:
        return []
    reference = "(defaults)" if "(defaults)" in order else order[0]
    commands = []
    for c in order:
        if c == reference:
            continue
        common = [s for s in runs[c] if s in runs[reference]]
        left_out = [f"seed {s} only in `{c}`" for s in runs[c] if s not in common]
        left_out += [f"seed {s} only in `{reference}`" for s in runs[reference] if s not in common]
        if len(common) < 2:
            note = (
                f"no command: {len(common)} seed(s) finished in both (an interval over seeds "
                f"needs 2 pairs); {', '.join(left_out)}"
            )
            commands.append((c, reference, "", note))
            continue
        group = {
            label: shlex.quote(",".join(runs[label][s] for s in common)) for label in (c, reference)
        }
        note = (
            f"seeds {', '.join(common)} only: the ones both finished; left out: "
            + ", ".join(left_out)
            if left_out
            else ""
        )
        command = f"dermlit compare --groups {group[c]} {group[reference]}"
        commands.append((c, reference, command, note))
    return commands


def plot(table: pd.DataFrame, jobs: Sequence[Job], path: Path, confidence: float = 0.95) -> None:
    """One panel per metric: each configuration's seeds (dots), mean and interval (bar), on the
    metrics' common [0, 1] scale (an interval reaching past it is cut at the edge)."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in any process

    labels, _ = configuration_labels(jobs)
    order = list(table["configuration"])[::-1]  # best at the top
    fig = Figure(figsize=(3.2 * len(METRICS) + 2, 0.45 * len(order) + 1.6), layout="constrained")
    axes = fig.subplots(1, len(METRICS), sharey=True)
    y = np.arange(len(order))
    rows = table.set_index("configuration").loc[order]
    for ax, (key, name) in zip(axes, METRICS.items(), strict=True):
        mean = rows[f"{key}_mean"].to_numpy()
        err = np.stack([mean - rows[f"{key}_ci_low"], rows[f"{key}_ci_high"] - mean])
        ax.errorbar(mean, y, xerr=np.nan_to_num(err), fmt="o", color="C0", capsize=3)
        for job, label in zip(jobs, labels, strict=True):
            if job.metrics is not None:
                ax.plot(job.metrics[key], order.index(label), ".", color="C1", alpha=0.7)
        ax.set_title(name)
        ax.set_xlim(-0.03, 1.03)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, order, fontsize=8)
    fig.suptitle(f"mean and {100 * confidence:g}% t-interval over seeds (dots: single seeds)")
    fig.savefig(path, dpi=120)


def write_summary(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    confidence: float = 0.95,
    seed_key: str = "seed",
) -> tuple[str, pd.DataFrame, list[Job]]:
    """summary.md, summary.csv, summary.png and jobs.csv in out_dir (default MULTIRUN_DIR/summary)."""
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir, seed_key)
    table = summarise(jobs, confidence)
    out = Path(out_dir) if out_dir is not None else sweep_dir / "summary"
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table, jobs, sweep_dir, confidence)
    (out / "summary.md").write_text(markdown)
    table.to_csv(out / "summary.csv", index=False)
    jobs_frame(jobs).to_csv(out / "jobs.csv", index=False)
    plot(table, jobs, out / "summary.png", confidence)
    return markdown, table, jobs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("multirun_dir", type=Path, help="a multirun's hydra.sweep.dir")
    parser.add_argument("--out", type=Path, default=None, help="default: MULTIRUN_DIR/summary")
    parser.add_argument("--confidence", type=float, default=0.95, help="of the t-interval")
    parser.add_argument("--seed-key", default="seed", help="the override that names a replicate")


#: the prefix of its one-line errors, as the other ``dermlit`` subcommands print theirs
PROGRAM = "dermlit sweep-summary"


def run(args: argparse.Namespace) -> int:
    if not 0 < args.confidence < 1:
        exit_with(PROGRAM, f"--confidence must be in (0, 1), got {args.confidence}")
    try:
        markdown, _, jobs = write_summary(
            args.multirun_dir, args.out, args.confidence, args.seed_key
        )
    except FileNotFoundError as error:
        exit_with(PROGRAM, str(error))
    print(markdown, end="")
    out = args.out or args.multirun_dir / "summary"
    n_failed = sum(j.failed for j in jobs)
    print(f"Wrote {out}/summary.md, summary.csv, summary.png, jobs.csv", file=sys.stderr)
    if n_failed:
        print(f"warning: {n_failed} of {len(jobs)} jobs failed (listed above)", file=sys.stderr)
    n_unfinished = sum(j.unfinished for j in jobs)
    if n_unfinished:
        print(
            f"note: {n_unfinished} of {len(jobs)} jobs are unfinished (preempted or running, "
            "listed above): continue a preempted one with dermlit-train resume=JOB_DIR",
            file=sys.stderr,
        )
    return 0
