"""``dermlit compare --groups``: effects over seeds against a hand-worked example, the interval's
coverage by simulation, and the refusals (other test sets, unpaired or repeated seeds)."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, recall_score

from dermlit.cli import main as cli
from dermlit.constants import CLASS_TO_INDEX
from dermlit.evaluation.predictions import predictions_frame, write_predictions
from dermlit.evaluation.seed_compare import (
    GROUP_METRICS,
    compare_groups,
    load_group,
    seed_interval,
)
from dermlit.sweep_summary import read_jobs, summarise, to_markdown

MEL, NV = CLASS_TO_INDEX["mel"], CLASS_TO_INDEX["nv"]
#: 8 test images: 4 melanomas then 4 naevi
TARGETS = np.array([MEL] * 4 + [NV] * 4)
IDS = [f"ISIC_{i:07d}" for i in range(8)]
#: which images each run gets right (1) per seed; B is wrong on m2, m4 and n4 in every seed
#: (hard images shared across seeds: the image noise the seeds share)
CORRECT_A = {0: [1, 1, 1, 0, 1, 1, 1, 1], 1: [1, 1, 1, 0, 1, 1, 1, 0], 2: [1] * 8}
CORRECT_B = {s: [1, 0, 1, 0, 1, 1, 1, 0] for s in range(3)}


def probs_for(correct) -> np.ndarray:
    """0.8 on the predicted class (the target, or the other of mel/nv), 0.2/6 elsewhere."""
    pred = np.where(np.asarray(correct) == 1, TARGETS, np.where(TARGETS == MEL, NV, MEL))
    p = np.full((8, 7), 0.2 / 6)
    p[np.arange(8), pred] = 0.8
    return p


def write_run(run: Path, seed, probs, ids=IDS, targets=TARGETS, seed_in_config=True) -> Path:
    (run / ".hydra").mkdir(parents=True)
    config = {"seed": seed} if seed_in_config else {"data": {}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([]))
    order = np.random.default_rng(seed).permutation(len(ids))  # rows in another order per run
    frame = predictions_frame([ids[i] for i in order], probs[order], np.asarray(targets)[order])
    write_predictions(run / "predictions.csv", frame)
    return run


@pytest.fixture
def groups(tmp_path: Path) -> tuple[Path, Path]:
    for name, correct in (("a", CORRECT_A), ("b", CORRECT_B)):
        for seed, c in correct.items():
            write_run(tmp_path / name / str(seed), seed, probs_for(c))
    return tmp_path / "a", tmp_path / "b"


def analytic_shared_cov(d: np.ndarray, weights: np.ndarray) -> float:
    """Mean off-diagonal covariance over stratified image resamples of per-seed deltas that
    are weighted means of per-image differences d (n, N): within class c (m_c images drawn
    with replacement), Cov = sum_c weight_c^2 * popcov_c(d_s, d_t) / m_c."""
    n = len(d)
    cov = np.zeros((n, n))
    for c in np.unique(TARGETS):
        idx = TARGETS == c
        x = d[:, idx] - d[:, idx].mean(1, keepdims=True)
        cov += weights[c] ** 2 * (x @ x.T / idx.sum()) / idx.sum()
    return float((cov.sum() - np.trace(cov)) / (n * (n - 1)))


def expected_interval(deltas, shared, alpha=0.05):
    n = len(deltas)
    seed_part = np.var(deltas, ddof=1) / n
    se2 = seed_part + max(shared, 0.0)
    df = se2**2 / (seed_part**2 / (n - 1))
    half = stats.t.ppf(1 - alpha / 2, df) * math.sqrt(se2)
    return np.mean(deltas), half, df


def test_hand_worked_example(groups):
    a, b = (load_group(str(g)) for g in groups)
    result = compare_groups(a, b, n_resamples=20000, seed=1)
    assert result["seeds"] == ["0", "1", "2"] and result["n_images"] == 8

    # accuracy: A 7/8, 6/8, 8/8; B 5/8 in every seed -> deltas 2/8, 1/8, 3/8
    acc = result["metrics"]["accuracy"]
    assert [p["delta"] for p in acc["per_seed"]] == pytest.approx([0.25, 0.125, 0.375])
    assert acc["a_mean"] == pytest.approx(7 / 8) and acc["b_mean"] == pytest.approx(5 / 8)
    assert acc["seed_sd"] == pytest.approx(0.125)  # sd of (0.25, 0.125, 0.375)
    d = np.array([np.subtract(CORRECT_A[s], CORRECT_B[s]) for s in range(3)], dtype=float)
    # accuracy = sum_c (m_c / N) * class-c mean: weight 1/2 per class; by hand the off-diagonal
    # covariances are 0.1875/16, 0.3125/16, 0.125/16 -> mean 0.013021
    shared = analytic_shared_cov(d, {MEL: 0.5, NV: 0.5})
    assert shared == pytest.approx(0.625 / 48)
    mean, half, df = expected_interval([0.25, 0.125, 0.375], shared)
    assert acc["mean_delta"] == pytest.approx(mean)
    assert acc["image_shared_var"] == pytest.approx(shared, rel=0.03)  # bootstrap vs exact
    assert acc["ci_high"] - acc["mean_delta"] == pytest.approx(half, rel=0.03)
    assert acc["df"] == pytest.approx(df, rel=0.1) and 2 < acc["df"] < 100
    assert acc["seeds_a_better"] == 3

    # melanoma recall: A 3/4, 3/4, 4/4, B 2/4 -> deltas 1/4, 1/4, 1/2; only mel images count
    mel = result["metrics"]["recall_mel"]
    assert [p["delta"] for p in mel["per_seed"]] == pytest.approx([0.25, 0.25, 0.5])
    shared_mel = analytic_shared_cov(d, {MEL: 1.0, NV: 0.0})
    mean, half, _ = expected_interval([0.25, 0.25, 0.5], shared_mel)
    assert mel["ci_low"] == pytest.approx(mean - half, rel=0.03)

    # macro-F1 and balanced accuracy per seed: scikit-learn on the same predictions
    for s in range(3):
        pa, pb = probs_for(CORRECT_A[s]).argmax(1), probs_for(CORRECT_B[s]).argmax(1)
        f1 = f1_score(TARGETS, pa, average="macro") - f1_score(TARGETS, pb, average="macro")
        bacc = recall_score(TARGETS, pa, average="macro") - recall_score(
            TARGETS, pb, average="macro"
        )
        assert result["metrics"]["macro_f1"]["per_seed"][s]["delta"] == pytest.approx(f1)
        assert result["metrics"]["balanced_accuracy"]["per_seed"][s]["delta"] == pytest.approx(bacc)
        assert acc["per_seed"][s]["a"] == pytest.approx(accuracy_score(TARGETS, pa))
    # every class's recall is reported; classes absent from the test set are n/a, not 0
    assert set(GROUP_METRICS) <= set(result["metrics"])
    assert math.isnan(result["metrics"]["recall_df"]["mean_delta"])
    # ece: lower is better, so "A better" counts seeds where A's ECE is lower
    ece = result["metrics"]["ece"]
    lower = sum(p["delta"] < 0 for p in ece["per_seed"])
    assert not ece["higher_is_better"] and ece["seeds_a_better"] == lower


@pytest.mark.parametrize(
    ("seed_sd", "image_sd", "rho"),
    [(1.0, 0.1, 0.5), (0.1, 1.0, 0.9), (0.5, 0.5, 0.5), (0.5, 0.5, 0.0)],
    ids=["seeds-dominate", "shared-images-dominate", "mixed", "independent-image-noise"],
)
def test_interval_covers_95_percent_with_3_seeds(seed_sd, image_sd, rho):
    """d_s = mu + tau_s + e_s, e ~ N(0, Sigma) shared-correlated: the interval (Sigma given, as
    the bootstrap estimates it) covers mu ~95 % of the time; a percentile bootstrap over the 3
    seeds covers far less (the module docstring's argument)."""
    n, reps, mu = 3, 4000, 0.3
    rng = np.random.default_rng(0)
    sigma = image_sd**2 * (rho * np.ones((n, n)) + (1 - rho) * np.eye(n))
    d = mu + rng.normal(0, seed_sd, (reps, n)) + rng.multivariate_normal(np.zeros(n), sigma, reps)
    covered = [(r := seed_interval(x, sigma))["ci_low"] <= mu <= r["ci_high"] for x in d]
    assert 0.935 <= np.mean(covered) <= 0.975
    if seed_sd > image_sd:
        picks = rng.integers(0, n, (reps, 200, n))
        boot = np.take_along_axis(d[:, None, :], picks, 2).mean(2)
        low, high = np.quantile(boot, [0.025, 0.975], axis=1)
        assert np.mean((low <= mu) & (mu <= high)) < 0.8


def test_cli_groups_writes_markdown_and_json(groups, tmp_path, capsys):
    a, b = groups
    out = tmp_path / "out"
    args = ["compare", "--groups", str(a), str(b), "--resamples", "500", "--out", str(out)]
    assert cli(args) == 0
    printed = capsys.readouterr().out
    assert "3 seed pairs" in printed and "accuracy" in printed
    result = json.loads((out / "compare.json").read_text())
    direct = compare_groups(load_group(str(a)), load_group(str(b)), n_resamples=500, seed=0)
    for m in ("accuracy", "macro_f1", "recall_mel", "ece"):
        assert result["metrics"][m]["ci_low"] == pytest.approx(direct["metrics"][m]["ci_low"])
    assert result["metrics"]["recall_df"]["mean_delta"] is None  # NaN -> null in JSON
    md = (out / "compare.md").read_text()
    assert "| accuracy | 0.875 | 0.625 | +0.250 |" in md and "0: +0.250, 1: +0.125" in md
    # two multirun folders without --groups are detected as groups; globs and lists work
    assert cli(["compare", str(a), str(b), "--resamples", "50"]) == 0
    assert "3 seed pairs" in capsys.readouterr().out
    listed = ",".join(str(a / s) for s in "012")
    assert cli(["compare", "--groups", f"{b}/*", listed, "--resamples", "50"]) == 0
    assert "-0.250" in capsys.readouterr().out  # B - A this time


def test_groups_with_different_test_sets_are_refused(groups, tmp_path, capsys):
    a, _ = groups
    other = tmp_path / "c"
    for seed in range(3):
        ids = IDS[:7] + ["ISIC_X"] if seed == 2 else IDS
        write_run(other / str(seed), seed, probs_for(CORRECT_B[seed]), ids=ids)
    assert cli(["compare", "--groups", str(a), str(other)]) == 2
    err = capsys.readouterr().err
    assert "test sets differ" in err and str(other / "2") in err and "ISIC_X" in err
    relabelled = tmp_path / "d"
    for seed in range(3):
        t = TARGETS.copy()
        t[0] = NV if seed == 1 else MEL
        write_run(relabelled / str(seed), seed, probs_for(CORRECT_B[seed]), targets=t)
    assert cli(["compare", "--groups", str(a), str(relabelled)]) == 2
    assert "ISIC_0000000 (A mel, B nv)" in capsys.readouterr().err


def test_unpaired_and_repeated_seeds(groups, tmp_path, capsys):
    a, b = groups
    (b / "2").rename(b / "3")
    cfg = b / "3" / ".hydra" / "config.yaml"
    cfg.write_text(yaml.safe_dump({"seed": 3}))
    assert cli(["compare", "--groups", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert f"seed 2 only in A ({a / '2'})" in err and f"seed 3 only in B ({b / '3'})" in err
    assert "--allow-unpaired" in err
    out = tmp_path / "cmp.md"
    assert cli(["compare", "--groups", str(a), str(b), "--allow-unpaired", "--out", str(out)]) == 0
    md = out.read_text()
    assert "2 seed pairs (0, 1)" in md and f"A seed 2: {a / '2'}" in md
    assert f"B seed 3: {b / '3'}" in md

    cfg.write_text(yaml.safe_dump({"seed": 1}))
    assert cli(["compare", "--groups", str(a), str(b)]) == 2
    assert "two runs with seed=1" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump({"data": {}}))
    assert cli(["compare", "--groups", str(a), str(b)]) == 2
    assert f"no 'seed' for run {b / '3'}" in capsys.readouterr().err


def test_runs_copied_without_hydra_are_paired_by_their_seed_directory(groups, tmp_path):
    """The committed layout docs/results/<study>/<arm>/seed<k>/ keeps only the result files."""
    for name, group in zip("ab", groups, strict=True):
        for seed in range(3):
            copy = tmp_path / "docs" / name / f"seed{seed}"
            copy.mkdir(parents=True)
            (copy / "predictions.csv").write_bytes(
                (group / str(seed) / "predictions.csv").read_bytes()
            )
    a, b = (load_group(str(tmp_path / "docs" / n)) for n in "ab")
    assert [r.seed for r in a.runs] == ["0", "1", "2"]
    result = compare_groups(a, b, n_resamples=50)
    assert result["metrics"]["accuracy"]["mean_delta"] == pytest.approx(0.25)


def write_evaluation(out: Path, source: Path, run_dir=None, predictions=None) -> Path:
    """A dermlit-eval output of ``source``'s predictions: conf/eval.yaml's keys, whose ``seed``
    (0) is the bootstrap's."""
    (out / ".hydra").mkdir(parents=True)
    config = {"run_dir": run_dir, "predictions": predictions, "seed": 0}
    (out / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (out / "predictions.csv").write_bytes(source.read_bytes())
    return out


def test_evaluations_are_paired_by_the_seed_of_the_run_they_evaluated(groups, tmp_path, capsys):
    """Re-decisions (dermlit-eval run_dir=RUN, or predictions= of another evaluation) carry the
    eval's own bootstrap seed 0; they used to be paired by it ("two runs with seed=0")."""
    specs = []
    for group in groups:
        evals = []
        for seed in (1, 2):
            run = group / str(seed)
            # run_dir= names outputs/, gone after a machine change: the archived layout remains
            first = run / "decision_no_bias"
            write_evaluation(first, run / "predictions.csv", run_dir=str(tmp_path / "gone"))
            second = first / "predictions.csv"
            evals.append(write_evaluation(run / "decision_floors", second, predictions=str(second)))
        specs.append(",".join(map(str, evals)))
    a, b = (load_group(spec) for spec in specs)
    assert [r.seed for r in a.runs] == [r.seed for r in b.runs] == ["1", "2"]
    direct = compare_groups(*(load_group(f"{g / '1'},{g / '2'}") for g in groups), n_resamples=50)
    via_evals = compare_groups(a, b, n_resamples=50)
    assert via_evals["metrics"]["accuracy"] == direct["metrics"]["accuracy"]

    orphan = tmp_path / "orphan" / "eval"
    write_evaluation(orphan, groups[0] / "0" / "predictions.csv", run_dir=str(tmp_path / "gone"))
    assert cli(["compare", "--groups", f"{orphan},{specs[0]}", specs[1]]) == 2
    err = capsys.readouterr().err
    assert f"{orphan} is a dermlit-eval output" in err and str(tmp_path / "gone") in err


def test_bad_group_specs_are_refused_with_the_path(groups, tmp_path, capsys):
    a, b = groups
    assert cli(["compare", str(a), str(b / "0")]) == 2
    assert "holds several runs but" in capsys.readouterr().err
    assert cli(["compare", "--groups", str(a), str(tmp_path / "nope*")]) == 2
    assert "matches nothing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli(["compare", "--groups", str(a), str(tmp_path / "empty")]) == 2
    assert "holds no predictions.csv" in capsys.readouterr().err
    assert cli(["compare", "--groups", str(a), str(b / "0"), "--allow-unpaired"]) == 2
    assert "at least 2 pairs" in capsys.readouterr().err


def test_sweep_summary_prints_the_compare_command_that_runs(tmp_path, capsys):
    """A multirun of optim=adamw,sam x seed=0,1,2: the summary's hint compares sam with the
    defaults row, and the printed command works as it is."""
    sweep = tmp_path / "multirun"
    num = 0
    for optim, correct in (("adamw", CORRECT_B), ("sam", CORRECT_A)):
        for seed, c in correct.items():
            job = write_run(sweep / str(num), seed, probs_for(c))
            overrides = [f"seed={seed}"] + ([] if optim == "adamw" else ["optim=sam"])
            (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
            metrics = {"test/macro_f1": 0.5, "test/balanced_accuracy": 0.5, "test/ece": 0.1}
            (job / "metrics.json").write_text(json.dumps(metrics))
            num += 1
    jobs = read_jobs(sweep)
    md = to_markdown(summarise(jobs), jobs, sweep)
    line = next(x for x in md.splitlines() if "dermlit compare --groups" in x)
    assert line.startswith("- `optim=sam`:") and "`(defaults)`" in md
    command = line.split(": `", 1)[1].rstrip("`")
    argv = shlex.split(command)
    assert argv[:3] == ["dermlit", "compare", "--groups"]
    assert argv[3] == ",".join(str(sweep / str(i)) for i in (3, 4, 5))
    assert cli([*argv[1:], "--resamples", "50"]) == 0
    printed = capsys.readouterr().out
    assert "3 seed pairs" in printed and "+0.250" in printed  # sam - adamw accuracy


def test_sweep_summary_compare_command_pairs_finished_seeds_only(tmp_path, capsys):
    """optim=sam finished seeds 0, 1, 3 (seed 2 was preempted and still holds the predictions.csv
    of an earlier attempt); the defaults finished 0, 1, 2; optim=sgd only 2, 3. The printed
    command compares sam and the defaults on seeds 0 and 1 (the ones both finished), says so,
    and runs; sgd, one shared seed, gets no command but the reason."""
    sweep = tmp_path / "multirun"
    plan = [  # (optim, seed, correct, finished)
        *[("adamw", s, CORRECT_B[s], True) for s in (0, 1, 2)],
        ("sam", 0, CORRECT_A[0], True),
        ("sam", 1, CORRECT_A[1], True),
        ("sam", 2, CORRECT_A[2], False),
        ("sam", 3, CORRECT_A[2], True),
        ("sgd", 2, CORRECT_B[2], True),
        ("sgd", 3, CORRECT_B[2], True),
    ]
    dirs = {}
    for num, (optim, seed, correct, finished) in enumerate(plan):
        job = write_run(sweep / str(num), seed, probs_for(correct))
        overrides = [f"seed={seed}"] + ([] if optim == "adamw" else [f"optim={optim}"])
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        metrics = {"test/macro_f1": 0.5, "test/balanced_accuracy": 0.5, "test/ece": 0.1}
        (job / "metrics.json").write_text(json.dumps(metrics))  # the preempted one's: stale
        state = "completed" if finished else "preempted"
        (job / "status.json").write_text(json.dumps({"state": state, "epoch": 3, "step": 30}))
        dirs[optim, seed] = str(job)
    jobs = read_jobs(sweep)
    assert [j.status for j in jobs].count("preempted") == 1
    md = to_markdown(summarise(jobs), jobs, sweep)
    lines = md.splitlines()
    i = next(k for k, x in enumerate(lines) if x.startswith("- `optim=sam`:"))
    argv = shlex.split(lines[i].split(": `", 1)[1].rstrip("`"))
    assert argv[:3] == ["dermlit", "compare", "--groups"]
    assert argv[3:] == [
        ",".join(dirs["sam", s] for s in (0, 1)),
        ",".join(dirs["adamw", s] for s in (0, 1)),
    ]
    assert lines[i + 1] == (
        "  (seeds 0, 1 only: the ones both finished; left out: seed 3 only in `optim=sam`, "
        "seed 2 only in `(defaults)`)"
    )
    assert "- `optim=sgd`: no command: 1 seed(s) finished in both" in md
    assert not any("optim=sgd" in x and "dermlit compare" in x for x in lines)
    assert cli([*argv[1:], "--resamples", "50"]) == 0
    printed = capsys.readouterr().out
    # sam - adamw accuracy over seeds 0, 1: (7/8 - 5/8 + 6/8 - 5/8) / 2 = 0.1875
    assert "2 seed pairs" in printed and "+0.188" in printed
