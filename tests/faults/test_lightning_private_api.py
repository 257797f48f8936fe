"""dermlit.distributed patches Lightning's PRIVATE subprocess launcher: if a Lightning release
changes it, HydraDDPStrategy must refuse loudly at configure time instead of letting every DDP
rank re-launch the whole sweep; pyproject.toml bounds Lightning to the tested minor versions."""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies.launchers import subprocess_script
from omegaconf import open_dict
from packaging.requirements import Requirement

from dermlit.config import CONF_DIR
from dermlit.distributed import HydraDDPStrategy, HydraJobLauncher

REPO = Path(__file__).resolve().parents[2]


def lightning_requirement() -> Requirement:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(Requirement(d) for d in deps if Requirement(d).name == "lightning")


def test_lightning_is_bounded_to_the_installed_minor_version() -> None:
    req = lightning_requirement()
    assert any(s.operator == "<" for s in req.specifier), f"no upper bound: {req}"
    assert version("lightning") in req.specifier, f"installed {version('lightning')} vs {req}"


def ddp_trainer() -> L.Trainer:
    return L.Trainer(
        strategy=HydraDDPStrategy(), accelerator="cpu", devices=2, logger=False, barebones=True
    )


def test_the_private_names_exist_and_the_launcher_is_replaced() -> None:
    from dermlit.distributed import LIGHTNING_REQUIREMENT, private_api_problems

    assert private_api_problems() == []
    assert type(ddp_trainer().strategy.launcher) is HydraJobLauncher
    assert Requirement(LIGHTNING_REQUIREMENT) == lightning_requirement()  # the message's bound


def test_a_missing_private_name_is_refused_at_configure_time(monkeypatch) -> None:
    monkeypatch.delattr(subprocess_script, "_hydra_subprocess_cmd")
    with pytest.raises(ValueError, match=r"_hydra_subprocess_cmd is gone.*whole sweep.*<2\.7"):
        ddp_trainer()


def test_a_launcher_that_no_longer_calls_the_patched_name_is_refused(monkeypatch) -> None:
    def renamed(self) -> None:  # a release that builds the child command some other way
        raise AssertionError("never launched")

    monkeypatch.setattr(
        subprocess_script._SubprocessScriptLauncher, "_call_children_scripts", renamed
    )
    with pytest.raises(ValueError, match="no longer calls the module's _hydra_subprocess_cmd"):
        ddp_trainer()


def test_children_rerun_the_job_not_the_sweep(monkeypatch, tmp_path: Path) -> None:
    """The patch takes effect where Lightning builds the child command (no process started)."""
    started = []
    monkeypatch.setattr(
        subprocess_script.subprocess, "Popen", lambda cmd, **kw: started.append(cmd)
    )
    for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv(key, "0")  # restored after the test; the launcher overwrites them
    monkeypatch.setattr(sys, "argv", ["dermlit-train", "-m", "loss=ce,focal", "seed=0,1"])
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["loss=focal", "seed=1"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "job")
    HydraConfig.instance().set_config(cfg)
    try:
        HydraJobLauncher(
            LightningEnvironment(), num_processes=2, num_nodes=1
        )._call_children_scripts()
    finally:
        HydraConfig.instance().cfg = None
    assert len(started) == 1
    args = started[0][3:] if started[0][1] == "-m" else started[0][2:]
    assert args[:2] == ["loss=focal", "seed=1"]  # this job's overrides, not the sweep's
    assert f"hydra.run.dir={tmp_path / 'job'}" in args and "hydra.output_subdir=null" in args
    assert "-m" not in args and "loss=ce,focal" not in args
