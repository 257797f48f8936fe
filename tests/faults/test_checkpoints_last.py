"""Faults 1 (last part) and 2: ``last.ckpt`` is the newest epoch end, and ``checkpoint=best`` is
the run's recorded best, not the last ``best-*.ckpt`` in sort order."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from callbacks.test_preemption import Tiny, loader
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ModelCheckpoint

from dermlit.callbacks.checkpoints import LastCheckpoint
from dermlit.checkpoints import resolve_checkpoint
from dermlit.config import CONF_DIR, register_resolvers

from .conftest import BATCHES


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_last_ckpt_is_the_final_step_when_validation_falls(finished_run: Path) -> None:
    ckpts = finished_run / "checkpoints"
    last = load(ckpts / "last.ckpt")
    # 3 epochs of 3 steps: the newest epoch end, not a copy of the best epoch
    assert (last["epoch"], last["global_step"]) == (2, 3 * BATCHES)
    best = load(ckpts / "best-epoch00.ckpt")
    assert (best["epoch"], best["global_step"]) == (0, BATCHES)
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "best-epoch00.ckpt",
        "best-epoch01.ckpt",
        "last.ckpt",
    ]


def test_best_is_the_runs_record_not_the_sort_order(finished_run: Path) -> None:
    # best-epoch01 sorts last, but epoch 0 is the best by the monitor (epoch, mode=min)
    assert (
        sorted((finished_run / "checkpoints").glob("best-*.ckpt"))[-1].name == "best-epoch01.ckpt"
    )
    assert resolve_checkpoint(finished_run, "best").name == "best-epoch00.ckpt"
    assert resolve_checkpoint(finished_run, "last").name == "last.ckpt"


def test_several_best_files_without_a_record_are_refused_by_name(tmp_path: Path) -> None:
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for name in ("best-epoch07.ckpt", "best-epoch12.ckpt"):
        torch.save({"state_dict": {}}, ckpts / name)
    with pytest.raises(ValueError) as err:  # dermlit.checkpoints.CheckpointError
        resolve_checkpoint(tmp_path, "best")
    message = str(err.value)
    assert "best-epoch07.ckpt, best-epoch12.ckpt" in message and "checkpoint=" in message
    # one file and no record: that one (runs written before the record existed)
    (ckpts / "best-epoch12.ckpt").unlink()
    assert resolve_checkpoint(tmp_path, "best").name == "best-epoch07.ckpt"


def test_record_is_current_when_the_best_changes_in_the_last_epoch(tmp_path: Path) -> None:
    """last.ckpt's copy of the monitored checkpoint's state names the best of ITS epoch, even
    with the callbacks listed the other way round (LastCheckpoint moves itself behind)."""
    ckpts = tmp_path / "checkpoints"
    best = ModelCheckpoint(
        dirpath=ckpts,
        filename="best-epoch{epoch:02d}",
        monitor="epoch",
        mode="max",
        save_top_k=2,
        auto_insert_metric_name=False,
    )
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[LastCheckpoint(ckpts), best],
        default_root_dir=tmp_path,
    )
    trainer.fit(Tiny(), loader())
    assert load(ckpts / "last.ckpt")["global_step"] == trainer.global_step
    states = load(ckpts / "last.ckpt")["callbacks"]
    (recorded,) = [
        s["best_model_path"] for k, s in states.items() if k.startswith("ModelCheckpoint")
    ]
    assert Path(recorded).name == "best-epoch02.ckpt"  # epoch 2's, not epoch 1's
    assert resolve_checkpoint(tmp_path, "best").name == "best-epoch02.ckpt"


@pytest.mark.parametrize(("group", "has_last"), [("default", True), ("ema", True), ("none", False)])
def test_callback_groups_compose(group: str, has_last: bool) -> None:
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"callbacks={group}"])
    targets = {node["_target_"] for node in (cfg.callbacks or {}).values()}
    assert ("dermlit.callbacks.checkpoints.LastCheckpoint" in targets) == has_last
    if has_last:
        assert cfg.callbacks.model_checkpoint.save_last is False
