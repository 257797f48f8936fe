"""``dermlit compare RUN_A RUN_B``: is A better than B on the same test images, beyond noise?

Paired bootstrap (both models scored on the same stratified resamples) of every headline
metric, and McNemar's test on per-image correctness. Runs whose test sets differ are refused
with the difference named: a paired comparison on different images would be meaningless.

``dermlit compare --groups A B`` (or two folders that each hold several runs) compares two
configurations over training seeds: :mod:`dermlit.evaluation.seed_compare`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from dermlit.evaluation.bootstrap import COMPARED_METRICS, mcnemar, paired_bootstrap
from dermlit.evaluation.formatting import fmt, interval_text
from dermlit.evaluation.metrics import higher_is_better, point_metrics
from dermlit.evaluation.paired import Predictions, TestSetMismatch, align
from dermlit.evaluation.predictions import PREDICTIONS_ARE


def compare(
    a: Predictions,
    b: Predictions,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metrics: tuple[str, ...] = COMPARED_METRICS,
) -> dict:
    """JSON-ready: per metric A, B, delta (A - B), CI, share of resamples where A is better;
    McNemar on accuracy (b: only A right, c: only B right)."""
    pa, pb, t = align(a, b)
    paired = paired_bootstrap(pa, pb, t, n_resamples, seed, alpha, metrics)
    point_a, point_b = point_metrics(pa, t), point_metrics(pb, t)
    right_a, right_b = pa.argmax(1) == t, pb.argmax(1) == t
    stat, p = mcnemar(right_a, right_b)
    return {
        "a": a.name,
        "b": b.name,
        "n_images": len(t),
        "n_resamples": n_resamples,
        "seed": seed,
        "alpha": alpha,
        "metrics": {
            m: {
                "a": point_a[m],
                "b": point_b[m],
                **paired[m],
                "higher_is_better": higher_is_better(m),
            }
            for m in metrics
        },
        "mcnemar": {
            "only_a_correct": int(np.sum(right_a & ~right_b)),
            "only_b_correct": int(np.sum(~right_a & right_b)),
            "statistic": stat,
            "p_value": p,
        },
    }


def _ci(r: dict) -> str:
    """The delta's interval; none where its resampled differences are biased (intervals.py)."""
    status = r.get("ci_status", "ok")
    if status == "biased":
        return "no CI (biased bootstrap)"
    text = interval_text(r["ci_low"], r["ci_high"])
    return text + " zero width" if status == "degenerate" else text


def rows(result: dict) -> list[list[str]]:
    out = []
    for m, r in result["metrics"].items():
        delta = fmt(r["delta"], signed=True)
        out.append(
            [
                m,
                fmt(r["a"]),
                fmt(r["b"]),
                delta,
                _ci(r),
                fmt(r["share_a_better"], 2),
                "higher" if r["higher_is_better"] else "lower",
            ]
        )
    return out


COLUMNS = ["metric", "A", "B", "A - B", "CI", "P(A better)", "better"]


def markdown(result: dict) -> str:
    pct = f"{100 * (1 - result['alpha']):.0f}%"
    mc = result["mcnemar"]
    lines = [
        "# dermlit compare",
        "",
        f"A: `{result['a']}`  ",
        f"B: `{result['b']}`  ",
        f"{result['n_images']} paired test images; paired stratified bootstrap, "
        f"{result['n_resamples']} resamples, seed {result['seed']}, {pct} CI of A - B "
        "(percentile or BCa per metric, dermlit/evaluation/intervals.py).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + " --- |" * len(COLUMNS),
        *("| " + " | ".join(r) + " |" for r in rows(result)),
        "",
        f"McNemar on accuracy: only A correct {mc['only_a_correct']}, only B correct "
        f"{mc['only_b_correct']}, statistic {mc['statistic']:.3f}, p = {mc['p_value']:.4g}.",
    ]
    return "\n".join(lines) + "\n"


def _json(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.epilog = (
        "Over seeds: dermlit compare --groups 'multirun/sam' 'multirun/base' (each GROUP: a "
        "multirun folder, a folder of run dirs, a quoted glob, or a comma-separated list of "
        "run dirs; runs are paired by seed)."
    )
    parser.add_argument("run_a", nargs="?", help="run directory or predictions.csv of model A")
    parser.add_argument("run_b", nargs="?", help="run directory or predictions.csv of model B")
    parser.add_argument(
        "--groups",
        nargs=2,
        metavar=("GROUP_A", "GROUP_B"),
        help="compare two groups of runs over training seeds (instead of RUN_A RUN_B)",
    )
    parser.add_argument(
        "--seed-key", default="seed", help="groups: the config key runs are paired by"
    )
    parser.add_argument(
        "--allow-unpaired",
        action="store_true",
        help="groups: leave out (and list) runs whose seed is not in the other group",
    )
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        metavar="METRIC",
        help="default: the headline metrics (groups: and every class's recall)",
    )
    parser.add_argument(
        "--predictions-are",
        choices=PREDICTIONS_ARE,
        default="probabilities",
        help="what both files hold: probabilities (rows summing to 1, validated) or logits "
        "(softmaxed)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write FILE.md or FILE.json (by suffix), or DIR/compare.md and DIR/compare.json",
    )


def group_mode(args: argparse.Namespace) -> bool:
    """``--groups``, or RUN_A and RUN_B both folders of several runs (e.g. two multiruns)."""
    from dermlit.evaluation.seed_compare import holds_runs

    if args.groups:
        if args.run_a or args.run_b:
            raise ValueError("give either RUN_A RUN_B or --groups GROUP_A GROUP_B, not both")
        return True
    if not (args.run_a and args.run_b):
        raise ValueError("give RUN_A and RUN_B (runs or predictions.csv), or --groups A B")
    a, b = holds_runs(Path(args.run_a)), holds_runs(Path(args.run_b))
    if a != b:
        group, single = (args.run_a, args.run_b) if a else (args.run_b, args.run_a)
        raise ValueError(
            f"{group} holds several runs but {single} does not: compare two runs, or two "
            "groups of runs paired by seed (--groups GROUP_A GROUP_B)"
        )
    return a


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from dermlit.evaluation import seed_compare

    try:
        groups = group_mode(args)
        if groups:
            specs = args.groups or [args.run_a, args.run_b]
            a, b = (seed_compare.load_group(s, args.seed_key, args.predictions_are) for s in specs)
            metrics = tuple(args.metrics or seed_compare.GROUP_METRICS)
            result = seed_compare.compare_groups(
                a, b, args.resamples, args.seed, args.alpha, metrics, args.allow_unpaired
            )
        else:
            a, b = (Predictions.load(p, args.predictions_are) for p in (args.run_a, args.run_b))
            metrics = tuple(args.metrics or COMPARED_METRICS)
            result = compare(a, b, args.resamples, args.seed, args.alpha, metrics)
    except (TestSetMismatch, FileNotFoundError, KeyError, ValueError) as err:
        print(f"dermlit compare: {err}", file=sys.stderr)
        return 2
    console = Console(width=160)
    if groups:
        table = Table(title=f"A = {result['a']}\nB = {result['b']}", caption=None)
        for col in seed_compare.COLUMNS:
            table.add_column(col)
        for row in seed_compare.rows(result):
            table.add_row(*row)
        console.print(table)
        console.print(seed_compare.method_line(result))
        if result["left_out"]:
            console.print("Unpaired, left out: " + "; ".join(result["left_out"]))
        to_markdown = seed_compare.markdown
    else:
        table = Table(title=f"A = {a.name}\nB = {b.name}")
        for col in COLUMNS:
            table.add_column(col)
        for row in rows(result):
            table.add_row(*row)
        console.print(table)
        mc = result["mcnemar"]
        console.print(
            f"McNemar (accuracy): only A correct {mc['only_a_correct']}, only B correct "
            f"{mc['only_b_correct']}, p = {mc['p_value']:.4g}"
        )
        to_markdown = markdown
    if args.out is not None:
        out: Path = args.out
        targets = {".md": [out], ".json": [out]}.get(out.suffix)
        if targets is None:
            out.mkdir(parents=True, exist_ok=True)
            targets = [out / "compare.md", out / "compare.json"]
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".md":
                path.write_text(to_markdown(result))
            else:
                path.write_text(json.dumps(_json(result), indent=2) + "\n")
            console.print(f"wrote {path}")
    return 0
