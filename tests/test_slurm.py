"""SLURM without a cluster: the launcher config renders the expected sbatch script, and a
preempted job (SLURM's variables, a fake ``scontrol``) is requeued once and resumes by itself."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import lightning as L
import pytest
import torch
from callbacks.test_preemption import STEP, SignalAtStep, Tiny, fit
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment

from dermlit.callbacks.preemption import Preempted, PreemptionCheckpoint, ResumeSamplerPosition
from dermlit.config import CONF_DIR, register_resolvers

submitit = pytest.importorskip("submitit", reason="hydra-submitit-launcher is not installed")


@pytest.fixture
def slurm_cfg(tmp_path):
    register_resolvers()
    overrides = [
        "hydra/launcher=slurm",
        "trainer=slurm",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=720",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def fake_commands(bin_dir: Path, log: Path, *names: str) -> None:
    """Executables that append their name and arguments to ``log`` (SLURM's CLI, no cluster)."""
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        exe = bin_dir / name
        exe.write_text(f'#!/bin/sh\necho "{name} $@" >> {log}\n')
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


def test_launcher_renders_the_expected_sbatch_script(slurm_cfg, monkeypatch, tmp_path) -> None:
    # submitit refuses to build a SLURM executor where no `srun` is found
    fake_commands(tmp_path / "bin", tmp_path / "calls.log", "srun")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    launcher = instantiate(slurm_cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = launcher.params
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    assert params["additional_parameters"] == {"signal": f"USR1@{params['signal_delay_s']}"}

    # launch() up to the submission: keep the executor it built, submit nothing
    captured = {}

    def fake_map_array(executor, fn, *iterables):
        captured["executor"] = executor
        raise RuntimeError("stop before submitting")

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    launcher.setup(hydra_context=None, task_function=None, config=slurm_cfg)
    with pytest.raises(RuntimeError, match="stop before submitting"):
        launcher.launch([["seed=1"]], initial_job_idx=0)
    text = captured["executor"]._executor._make_submission_file_text("python job.py", "uid")
    lines = set(text.splitlines())
    expected = {
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --time=720",
        "#SBATCH --partition=gpu",
        "#SBATCH --signal=USR1@180",
    }
    assert expected <= lines, text
    # one task per GPU through srun: what Lightning's SLURM DDP expects
    assert any(line.startswith("srun ") for line in lines)


def test_trainer_config_uses_lightnings_slurm_environment(slurm_cfg) -> None:
    (plugin,) = [instantiate(node) for node in slurm_cfg.trainer.plugins]
    assert isinstance(plugin, SLURMEnvironment) and plugin.auto_requeue
    assert slurm_cfg.trainer.strategy._target_ == "dermlit.distributed.HydraDDPStrategy"


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """SLURM's variables for a 1-task job, and an ``scontrol`` that logs its arguments."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.log"
    fake_commands(bin_dir, calls, "scontrol")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242"}
    env |= {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    return calls


def slurm_fit(root, callbacks) -> tuple[Tiny, L.Trainer]:
    """What dermlit-train does under SLURM: ckpt_path=None, Lightning's SLURM environment."""
    return fit(root, callbacks, plugins=[SLURMEnvironment(auto_requeue=True)])


def test_preempted_job_is_requeued_once_and_resumes_by_itself(tmp_path, fake_slurm) -> None:
    whole, _ = slurm_fit(tmp_path / "whole", [])
    run = tmp_path / "run"
    with pytest.raises(Preempted):
        slurm_fit(run, [PreemptionCheckpoint(), SignalAtStep(STEP, signal.SIGUSR1)])
    # our handler, not Lightning's as well: one checkpoint, one requeue
    assert sorted(p.name for p in run.glob("hpc_ckpt_*.ckpt")) == ["hpc_ckpt_1.ckpt"]
    assert fake_slurm.read_text().split("\n")[:-1] == ["scontrol requeue 4242"]
    # the requeued job: same command, same directory, ckpt_path=None -> Lightning's hpc resume
    resumed, trainer = slurm_fit(run, [PreemptionCheckpoint(), ResumeSamplerPosition()])
    assert str(trainer.ckpt_path) == str(run / "hpc_ckpt_1.ckpt")
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
