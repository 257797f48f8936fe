"""Speed of whole-set bootstrap CIs: dermlit's vectorised engine vs a scikit-learn loop.

    python benchmarks/eval_speed.py [--n 10000] [--resamples 2000] [--sklearn-resamples 50]

Both sides score the same stratified resamples with every metric of ``point_metrics``; the
scikit-learn loop runs only ``--sklearn-resamples`` of them and is extrapolated linearly (the
output says so). The two are also checked to agree on those resamples.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from dermlit.constants import CLASS_TO_INDEX, CLASSES, HAM10000_CLASS_COUNTS
from dermlit.evaluation.bootstrap import bootstrap_distribution, metrics_with_ci, stratified_weights

# the standalone reference ECE/MCE/class-wise ECE live with the tests (tests/evaluation/oracles.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "evaluation"))
from oracles import classwise_ece, ece, mce  # noqa: E402

K = len(CLASSES)
MEL = CLASS_TO_INDEX["mel"]


def make_predictions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """HAM10000 class mix, moderately informative softmax outputs."""
    rng = np.random.default_rng(seed)
    prior = np.array([HAM10000_CLASS_COUNTS[c] for c in CLASSES], dtype=float)
    t = rng.choice(K, n, p=prior / prior.sum())
    logits = rng.normal(size=(n, K)) * 2.0
    logits[np.arange(n), t] += 2.5
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), t


def sklearn_metrics(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """The same metrics, one resample, the straightforward scikit-learn way."""
    pred = p.argmax(1)
    labels = list(range(K))
    prec, rec, f1, _ = skm.precision_recall_fscore_support(t, pred, labels=labels, zero_division=0)
    out = {
        "macro_f1": skm.f1_score(t, pred, average="macro", zero_division=0),
        "balanced_accuracy": skm.balanced_accuracy_score(t, pred),
        "accuracy": skm.accuracy_score(t, pred),
        "brier": skm.brier_score_loss(t, p, labels=labels, scale_by_half=False),
        "nll": skm.log_loss(t, p, labels=labels),
        "ece": ece(p, t),
        "mce": mce(p, t),
        "classwise_ece": classwise_ece(p, t),
    }
    aurocs = [skm.roc_auc_score(t == c, p[:, c]) for c in range(K)]
    out["auroc_macro"] = float(np.mean(aurocs))
    fpr, tpr, _ = skm.roc_curve(t == MEL, p[:, MEL], drop_intermediate=False)
    for spec in (80, 90, 95):
        out[f"mel_sensitivity_at_spec{spec}"] = tpr[1 - fpr >= spec / 100 - 1e-9].max()
    for c, name in enumerate(CLASSES):
        out |= {f"precision_{name}": prec[c], f"recall_{name}": rec[c], f"f1_{name}": f1[c]}
        out[f"auroc_{name}"] = aurocs[c]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--sklearn-resamples", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of ours; best is shown")
    args = ap.parse_args()
    p, t = make_predictions(args.n, args.seed)
    print(f"{args.n} predictions, {K} classes, {os.cpu_count()} CPUs visible")

    metrics_with_ci(p[:500], t[:500], n_resamples=10)  # warm-up (imports, BLAS threads)
    runs = []
    for _ in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = metrics_with_ci(p, t, n_resamples=args.resamples, seed=args.seed)
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    ours, ours_cpu = min(runs)
    n_ci = sum(k.endswith("_ci_low") for k in out)
    methods = [v for k, v in out.items() if k.endswith("_ci_method")]
    omitted = sum(k.endswith("_ci_biased") for k in out)
    print(
        f"dermlit vectorised: {args.resamples} resamples, {n_ci} metrics with CIs "
        f"(+ point estimates): {ours:.2f} s wall, {ours_cpu:.2f} s CPU "
        f"(best of {args.repeats}; load average {os.getloadavg()[0]:.1f})"
    )
    print(
        f"  intervals: {methods.count('percentile')} percentile, {methods.count('bca')} BCa "
        f"(grouped jackknife), {omitted} omitted as biased (dermlit/evaluation/intervals.py)"
    )
    print(
        f"  e.g. test/macro_f1 = {out['test/macro_f1']:.4f} "
        f"[{out['test/macro_f1_ci_low']:.4f}, {out['test/macro_f1_ci_high']:.4f}]"
    )

    m = args.sklearn_resamples
    weights = np.concatenate(list(stratified_weights(t, m, np.random.default_rng(args.seed))))
    start = time.perf_counter()
    loop = []
    for w in weights.astype(int):
        idx = np.repeat(np.arange(args.n), w)
        loop.append(sklearn_metrics(p[idx], t[idx]))
    per = (time.perf_counter() - start) / m
    est = per * args.resamples
    print(
        f"scikit-learn loop: {m} resamples took {per * m:.2f} s; "
        f"EXTRAPOLATED to {args.resamples}: {est:.1f} s"
    )
    print(f"speed-up (extrapolated sklearn / dermlit): {est / ours:.0f}x")

    dist = bootstrap_distribution([p], t, n_resamples=m, seed=args.seed)[0]
    worst = max(float(np.max(np.abs(dist[k] - np.array([r[k] for r in loop])))) for k in loop[0])
    print(f"agreement on those {m} resamples: max |difference| over all metrics = {worst:.2e}")


if __name__ == "__main__":
    main()
