"""``dermlit sweep-summary`` on hand-made job directories with known metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from PIL import Image
from scipy import stats

from dermlit.cli import main as cli_main
from dermlit.constants import CLASSES
from dermlit.hydra_callbacks import ERROR_FILE, JobErrorFile
from dermlit.sweep_summary import read_jobs, summarise

COMMON = ["data.image_size=32", "debug=fdr"]


def make_job(
    sweep: Path,
    num: int,
    overrides: list[str],
    metrics: dict[str, float | None] | None,
    error: str | None = None,
) -> Path:
    """A job directory as Hydra and dermlit-train leave it (only the files the summary reads)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if error is not None:
        (job / ERROR_FILE).write_text(error)
    return job


def metrics(f1: float, bacc: float, mel: float | None, ece: float, recalls: dict) -> dict:
    out = {"test/macro_f1": f1, "test/balanced_accuracy": bacc, "test/recall_mel": mel}
    out |= {"test/ece": ece, "test/macro_f1_ci_low": 0.0, "test/macro_f1_ci_high": 1.0}
    return out | {f"test/recall_{c}": recalls.get(c, 0.9) for c in CLASSES if c != "mel"}


#: focal: 3 seeds; ce: 2 seeds + 1 crashed (error.log); ldam: 1 seed; cb: only a killed job
FOCAL = [
    (0.50, 0.55, 0.60, 0.10, 0.30),
    (0.60, 0.62, 0.70, 0.12, 0.20),
    (0.70, 0.66, 0.65, 0.08, 0.40),
]
TRACEBACK = "Traceback (most recent call last):\n  File x\nRuntimeError: Unknown model (no_net)\n"


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "multirun"
    num = 0
    for seed, (f1, bacc, mel, ece, low) in enumerate(FOCAL):
        overrides = [f"seed={seed}", "loss=focal", "sampler=shuffle", *COMMON]
        make_job(sweep, num, overrides, metrics(f1, bacc, mel, ece, {"df": low}))
        num += 1
    # ce: the second seed's melanoma recall is null (no melanoma in its test split)
    for seed, (f1, mel) in enumerate([(0.40, 0.5), (0.44, None)]):
        overrides = ["loss=ce", "sampler=shuffle", *COMMON, f"seed={seed}"]
        make_job(sweep, num, overrides, metrics(f1, 0.5, mel, 0.2, {"vasc": 0.1}))
        num += 1
    make_job(sweep, num, ["loss=ce", "sampler=shuffle", *COMMON, "seed=2"], None, TRACEBACK)
    make_job(
        sweep,
        num + 1,
        ["loss=ldam", "sampler=shuffle", *COMMON, "seed=0"],
        metrics(0.45, 0.5, 0.5, 0.3, {}),
    )
    make_job(sweep, num + 2, ["loss=cb", "sampler=shuffle", *COMMON, "seed=0"], None)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (sweep / "notes").mkdir()  # not a job: no .hydra/overrides.yaml
    return sweep


def test_mean_and_t_interval_over_seeds_match_scipy(sweep: Path) -> None:
    table = summarise(read_jobs(sweep)).set_index("configuration")
    focal = table.loc["loss=focal"]
    assert focal["n_seeds"] == 3 and focal["n_failed"] == 0 and focal["seeds"] == "0,1,2"
    for i, key in enumerate(["macro_f1", "balanced_accuracy", "recall_mel", "ece", "min_recall"]):
        values = np.array([row[i] for row in FOCAL])
        low, high = stats.t.interval(0.95, df=2, loc=values.mean(), scale=stats.sem(values))
        assert focal[f"{key}_mean"] == pytest.approx(values.mean())
        assert (focal[f"{key}_ci_low"], focal[f"{key}_ci_high"]) == pytest.approx((low, high))
    # by hand: macro-F1 0.5, 0.6, 0.7 -> sd 0.1, t(0.975, 2) = 4.3027
    assert focal["macro_f1_ci_high"] == pytest.approx(0.6 + 4.302653 * 0.1 / math.sqrt(3))


def test_rows_sorted_by_macro_f1_failed_counted_null_metric_skipped(sweep: Path) -> None:
    table = summarise(read_jobs(sweep))
    assert list(table["configuration"]) == ["loss=focal", "loss=ldam", "loss=ce", "loss=cb"]
    ce = table.set_index("configuration").loc["loss=ce"]
    assert (ce["n_seeds"], ce["n_failed"]) == (2, 1)
    assert ce["macro_f1_mean"] == pytest.approx(0.42)
    assert ce["recall_mel_mean"] == pytest.approx(0.5)  # the null one is left out
    assert math.isnan(ce["recall_mel_ci_low"])  # one value left: no interval
    assert ce["min_recall_mean"] == pytest.approx(0.1)  # vasc, the lowest class
    ldam = table.set_index("configuration").loc["loss=ldam"]
    assert ldam["n_seeds"] == 1 and math.isnan(ldam["macro_f1_ci_low"])
    cb = table.set_index("configuration").loc["loss=cb"]
    assert (cb["n_seeds"], cb["n_failed"]) == (0, 1) and math.isnan(cb["macro_f1_mean"])


def test_cli_writes_markdown_csv_png_and_lists_failed_jobs(
    sweep: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "summary"
    assert cli_main(["sweep-summary", str(sweep), "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert printed == (out / "summary.md").read_text()
    assert "Overrides shared by all jobs: `sampler=shuffle data.image_size=32 debug=fdr`" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| `loss=")]
    assert [r.split("`")[1] for r in rows] == ["loss=focal", "loss=ldam", "loss=ce", "loss=cb"]
    assert "| 0.600 [0.352, 0.848] |" in rows[0]  # 0.6 +- 4.3027 * 0.1 / sqrt(3)
    assert "0.450 (n=1)" in rows[1] and rows[3].endswith("| - | - | - | - | - |")
    # both failed jobs, with the reason
    assert "## Failed jobs: 2 of 8" in printed
    assert "RuntimeError: Unknown model (no_net)" in printed
    assert (
        "`7` `loss=cb sampler=shuffle data.image_size=32 debug=fdr` seed=0: no metrics.json"
        in printed
    )
    assert "2 of 8 jobs failed" in err

    csv = pd.read_csv(out / "summary.csv")
    assert list(csv["configuration"]) == ["loss=focal", "loss=ldam", "loss=ce", "loss=cb"]
    for key in ("macro_f1", "balanced_accuracy", "recall_mel", "min_recall", "ece"):
        assert {f"{key}_mean", f"{key}_ci_low", f"{key}_ci_high"} <= set(csv.columns)
    assert csv.loc[1, "macro_f1_ci_low"] != csv.loc[1, "macro_f1_ci_low"]  # blank (NaN), n=1
    jobs = pd.read_csv(out / "jobs.csv")
    assert len(jobs) == 8 and (jobs["status"] == "failed").sum() == 2
    with Image.open(out / "summary.png") as png:
        assert png.format == "PNG" and png.width > 500


def test_a_truncated_metrics_json_fails_that_job_only(sweep: Path, tmp_path: Path, capsys) -> None:
    """A metrics.json cut off mid-write (a job killed while writing it) is that job's failure,
    with the reason; the other jobs are still summarised and the summary written."""
    job = make_job(sweep, 8, ["loss=ldam", "sampler=shuffle", *COMMON, "seed=1"], None)
    text = json.dumps(metrics(0.9, 0.9, 0.9, 0.1, {}))
    (job / "metrics.json").write_text(text[: len(text) // 2])
    try:
        json.loads((job / "metrics.json").read_text())
    except ValueError as err:
        reason = f"{job / 'metrics.json'} is not valid JSON: {err}"
    out = tmp_path / "summary"
    assert cli_main(["sweep-summary", str(sweep), "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert printed == (out / "summary.md").read_text()
    assert "## Failed jobs: 3 of 9" in printed and "3 of 9 jobs failed" in err
    assert (
        f"`8` `loss=ldam sampler=shuffle data.image_size=32 debug=fdr` seed=1: {reason}" in printed
    )
    table = pd.read_csv(out / "summary.csv").set_index("configuration")
    assert (table.loc["loss=ldam", "n_seeds"], table.loc["loss=ldam", "n_failed"]) == (1, 1)
    assert table.loc["loss=ldam", "macro_f1_mean"] == pytest.approx(0.45)  # the readable seed
    assert table.loc["loss=focal", "macro_f1_mean"] == pytest.approx(np.mean([r[0] for r in FOCAL]))
    jobs = pd.read_csv(out / "jobs.csv").set_index("job")
    assert jobs.loc[8, "status"] == "failed" and jobs.loc[8, "error"] == reason


def test_metrics_json_is_replaced_atomically(tmp_path: Path, monkeypatch) -> None:
    """A write that dies half-way (disk full, a kill) leaves the previous metrics.json whole and
    no temporary file behind, not a truncated metrics.json."""
    from dermlit.rundir import write_metrics

    path = tmp_path / "metrics.json"
    write_metrics(path, {"test/macro_f1": 0.5})
    real_write = Path.write_text

    def dies_half_way(self: Path, data: str, *args, **kwargs) -> int:
        real_write(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        write_metrics(path, {"test/macro_f1": 0.75, "test/ece": float("nan")})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"test/macro_f1": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    write_metrics(path, {"test/macro_f1": 0.75, "test/ece": float("nan")})
    assert json.loads(path.read_text()) == {"test/ece": None, "test/macro_f1": 0.75}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_default_out_dir_is_inside_the_sweep_and_not_read_as_a_job(sweep: Path, capsys) -> None:
    assert cli_main(["sweep-summary", str(sweep)]) == 0
    assert (sweep / "summary" / "summary.csv").is_file()
    first = capsys.readouterr().out
    assert cli_main(["sweep-summary", str(sweep)]) == 0  # again: summary/ is no job
    assert capsys.readouterr().out == first


def test_seed_from_the_config_when_not_overridden(tmp_path: Path) -> None:
    job = make_job(tmp_path, 0, ["loss=ce"], metrics(0.5, 0.5, 0.5, 0.1, {}))
    (job / ".hydra" / "config.yaml").write_text("seed: 7\nloss: {}\n")
    [read] = read_jobs(tmp_path)
    assert read.seed == "7" and read.overrides == ["loss=ce"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing"], "is not a directory"),
        (["{tmp}"], "no job directories in"),
        (["{tmp}", "--confidence", "95"], "--confidence must be in (0, 1)"),
    ],
)
def test_bad_input_fails_with_a_message(tmp_path: Path, capsys, args, message) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["sweep-summary", *(a.format(tmp=tmp_path) for a in args)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dermlit sweep-summary: ") and message in err, err


def test_error_file_callback_writes_the_traceback_and_clears_it_on_success(tmp_path) -> None:
    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}}})
    try:
        raise RuntimeError("Unknown model (no_net)")
    except RuntimeError as error:
        failed = JobReturn(overrides=["model.backbone.name=no_net"], status=JobStatus.FAILED)
        failed.return_value = error
    JobErrorFile().on_job_end(config, failed)
    text = (tmp_path / ERROR_FILE).read_text()
    assert "model.backbone.name=no_net" in text and "Traceback" in text
    assert text.rstrip().endswith("RuntimeError: Unknown model (no_net)")
    JobErrorFile().on_job_end(config, JobReturn(status=JobStatus.COMPLETED))
    assert not (tmp_path / ERROR_FILE).exists()


def test_a_running_job_on_another_host_says_how_old_its_status_is(tmp_path: Path) -> None:
    """A job killed on a SLURM node cannot write 'failed', and its PID cannot be checked from
    the login node: the summary showed it 'running' forever without saying since when."""
    import socket
    from datetime import datetime, timedelta

    from dermlit.sweep_summary import unfinished_reason

    written = (datetime.now().astimezone() - timedelta(hours=5)).isoformat(timespec="seconds")
    status = {"state": "running", "epoch": 3, "step": 120, "pid": 4242, "updated": written}
    reason = unfinished_reason(tmp_path, {**status, "host": "node-that-is-not-here"})
    assert f"(status of {written}, 5.0 h ago)" in reason
    assert "another host, whose process cannot be checked from here" in reason
    here = unfinished_reason(tmp_path, {**status, "host": socket.gethostname()})
    assert "5.0 h ago" in here and "another host" not in here
