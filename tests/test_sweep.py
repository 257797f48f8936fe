"""Multiruns through the real entry point (``dermlit-train -m``), W&B grouping, sweep-summary."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from scipy import stats

from dermlit.config import CONF_DIR, register_resolvers

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.source.n_images=700", "data.image_size=32", "data.batch_size=32"]
#: the imbalance sweep's recipe, on the tiny synthetic set, one batch per stage
FAST = ["experiment=imbalance_sweep", "data=synthetic", *TINY, "data.num_workers=0", "debug=fdr"]
FAST += ["bootstrap_resamples=20", "evaluation.figures=false"]  # figures: ~2.5 s a job


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dermlit-cache")


def multirun(
    sweep_dir: Path, cache_dir: Path, *overrides: str, check: bool = True
) -> subprocess.CompletedProcess:
    env = {**os.environ, "DERMLIT_CACHE": str(cache_dir), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "dermlit.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def summary(sweep_dir: Path) -> tuple[str, pd.DataFrame]:
    cmd = [sys.executable, "-m", "dermlit.cli", "sweep-summary", str(sweep_dir)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, pd.read_csv(sweep_dir / "summary" / "summary.csv")


def wandb_run_records(run_file: Path):
    """The RunRecords of a ``.wandb`` file (a LevelDB-style log of protobuf records; wandb
    ships no reader for it any more): 7-byte file header, 32 KiB blocks, records split into
    FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4 chunks behind a 7-byte (crc, length, type) header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buffer, kinds = run_file.read_bytes(), 7, b"", set()
    runs = []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buffer = chunk if kind in (1, 2) else buffer + chunk
        if kind in (1, 4):
            record = pb.Record.FromString(buffer)
            kinds.add(record.WhichOneof("record_type"))
            if record.HasField("run"):
                runs.append(record.run)
    return runs, kinds


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, cache_dir: Path) -> Path:
    """2 losses x 2 samplers x 1 seed, logged to W&B offline."""
    sweep = tmp_path_factory.mktemp("sweeps") / "tiny_sweep"
    grid = ["loss=ce,focal", "sampler=shuffle,sqrt_frequency", "seed=0", "logger=wandb"]
    multirun(sweep, cache_dir, *FAST, *grid)
    return sweep


def test_each_job_has_the_run_contract(tiny_sweep: Path) -> None:
    jobs = sorted(d for d in tiny_sweep.iterdir() if d.name.isdigit())
    assert [d.name for d in jobs] == ["0", "1", "2", "3"]
    grid = set()
    for job in jobs:
        for name in (".hydra/overrides.yaml", "metrics.json", "predictions.csv", "splits.csv"):
            assert (job / name).is_file(), f"{job}/{name}"
        assert (job / "report" / "report.md").is_file()
        resolved = yaml.safe_load((job / ".hydra" / "resolved.yaml").read_text())
        grid.add((resolved["loss"]["_target_"], resolved["sampler"]["_target_"]))
        assert resolved["data"]["source"]["_target_"].endswith("SyntheticSource")
        assert resolved["data"]["image_size"] == 32 and resolved["seed"] == 0
        assert "test/macro_f1" in json.loads((job / "metrics.json").read_text())
    assert len(grid) == 4


def test_wandb_runs_one_per_job_grouped_by_sweep_named_by_overrides(tiny_sweep: Path) -> None:
    ids = set()
    for job in sorted(d for d in tiny_sweep.iterdir() if d.name.isdigit()):
        [run_file] = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
        runs, kinds = wandb_run_records(run_file)
        hydra_job = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]
        assert {r.run_group for r in runs} == {"tiny_sweep"}
        assert {r.display_name for r in runs} == {f"{hydra_job['override_dirname']},seed=0"}
        assert "exit" in kinds  # wandb.finish() ran: the next job starts a run of its own
        ids |= {r.run_id for r in runs}
    assert len(ids) == 4


def test_sweep_summary_of_the_multirun_has_one_row_per_configuration(tiny_sweep: Path) -> None:
    markdown, table = summary(tiny_sweep)
    expected = {
        f"loss={lo},sampler={sa}" for lo in ("ce", "focal") for sa in ("shuffle", "sqrt_frequency")
    }
    assert set(table["configuration"]) == expected and len(table) == 4
    assert (table["n_seeds"] == 1).all() and (table["n_failed"] == 0).all()
    assert table["macro_f1_mean"].is_monotonic_decreasing
    assert table["macro_f1_ci_low"].isna().all()  # one seed: no interval, documented
    for row in table.itertuples():
        metrics = json.loads(
            next(
                (d / "metrics.json").read_text()
                for d in tiny_sweep.iterdir()
                if d.name.isdigit()
                and row.configuration.replace(",", "\n- ")
                in (d / ".hydra" / "overrides.yaml").read_text()
            )
        )
        assert row.macro_f1_mean == pytest.approx(metrics["test/macro_f1"])
    rows = [line for line in markdown.splitlines() if line.startswith("| `loss=")]
    assert len(rows) == 4 and all(row.count("(n=1)") == 5 for row in rows)
    assert "## Failed jobs: 0 of 4" in markdown
    assert (tiny_sweep / "summary" / "summary.png").stat().st_size > 0


def test_failed_jobs_get_an_error_log_and_are_listed(tmp_path: Path, cache_dir: Path) -> None:
    sweep = tmp_path / "broken"
    proc = multirun(sweep, cache_dir, *TINY, "model.backbone.name=no_net_a,no_net_b", check=False)
    assert proc.returncode != 0 and "Error executing job" in proc.stderr
    for num, name in enumerate(["no_net_a", "no_net_b"]):  # the second job still ran
        assert name in (sweep / str(num) / "error.log").read_text()
        assert not (sweep / str(num) / "metrics.json").exists()
    markdown, table = summary(sweep)
    assert "## Failed jobs: 2 of 2" in markdown
    assert list(table["n_failed"]) == [1, 1] and list(table["n_seeds"]) == [0, 0]
    assert markdown.count("no_net_") >= 4  # configuration rows and failure lines


@pytest.mark.slow
def test_two_seeds_give_t_intervals_over_the_jobs_metrics(tmp_path: Path, cache_dir: Path) -> None:
    sweep = tmp_path / "seeds"
    multirun(sweep, cache_dir, *FAST, "loss=ce,focal", "sampler=shuffle,sqrt_frequency", "seed=0,1")
    _, table = summary(sweep)
    assert len(table) == 4 and (table["n_seeds"] == 2).all()
    per_config: dict[str, list[float]] = {}
    for job in (d for d in sweep.iterdir() if d.name.isdigit()):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        key = ",".join(o for o in overrides if o.split("=")[0] in ("loss", "sampler"))
        f1 = json.loads((job / "metrics.json").read_text())["test/macro_f1"]
        per_config.setdefault(key, []).append(f1)
    for row in table.itertuples():
        values = np.array(per_config[row.configuration])
        low, high = stats.t.interval(0.95, df=1, loc=values.mean(), scale=stats.sem(values))
        assert (row.macro_f1_ci_low, row.macro_f1_ci_high) == pytest.approx((low, high))


def test_imbalance_sweep_expands_to_loss_x_sampler_x_seed_on_ham10000() -> None:
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["experiment=imbalance_sweep"], return_hydra_config=True)
        params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
        jobs = [
            [o.get_key_element() + "=" + v for v in o.sweep_string_iterator()]
            for o in OverridesParser.create().parse_overrides(params)
        ]
        assert [len(j) for j in jobs] == [5, 3, 2]
        for loss in jobs[0]:  # every option exists and composes with the recipe
            job = compose("train", ["experiment=imbalance_sweep", loss, jobs[1][-1]])
            assert job.data.source._target_.endswith("HAM10000Source")
            assert job.trainer.max_epochs == 15
        assert "imbalance_sweep_" in cfg.hydra.sweep.dir


def test_wandb_group_is_the_sweep_dir_name_in_a_multirun_and_none_in_a_single_run() -> None:
    register_resolvers()
    overrides = ["logger=wandb", "loss=focal", "seed=3", "hydra.sweep.dir=/x/my_sweep"]
    for mode, group in [("MULTIRUN", "my_sweep"), ("RUN", None)]:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", [*overrides, f"hydra.mode={mode}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        assert cfg.hydra.mode == RunMode[mode]
        assert cfg.logger.wandb.group == group
        assert cfg.logger.wandb.name == "logger=wandb,loss=focal,seed=3"
