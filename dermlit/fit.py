"""What ``dermlit-train`` does once a run is allowed to start: instantiate, fit, test, write the
run directory. Apart from :mod:`dermlit.train` (the Hydra entry point), so that a refused run
(an occupied run directory, a bad ``resume=``) is refused before Lightning is imported."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from dermlit.callbacks.checkpoints import (
    SnapshotCheckpoint,
    last_checkpoint_path,
    monitored_checkpoint,
)
from dermlit.checkpoints import SNAPSHOTS, resolve_snapshots
from dermlit.errors import InputError
from dermlit.evaluation.class_counts import write_class_counts
from dermlit.evaluation.report import log_report_to_loggers
from dermlit.explain.review import split_explainer
from dermlit.loggers import close_loggers, log_flat_config
from dermlit.models.ensemble import snapshot_ensemble
from dermlit.rundir import (
    SUMMARY_METRICS,
    adapted_for_test,
    predict_split,
    print_summary,
    write_evaluation,
)
from dermlit.status import RunStatus
from dermlit.tuning import OBJECTIVE, best_validation_score

log = logging.getLogger(__name__)
#: ``test_weights``: the best epoch by the monitor, the last epoch, or the snapshot ensemble
TEST_WEIGHTS = ("best", "last", SNAPSHOTS)
# DermClassifier owns on_after_batch_transfer on purpose (augment + normalise on the device)
warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer` in `Lightning")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def instantiate_dict(cfg: DictConfig | None) -> list:
    """Callbacks and loggers are dicts of named nodes, so one can be dropped by name."""
    return [instantiate(node) for node in (cfg or {}).values() if node is not None]


def test_checkpoint(cfg: DictConfig, trainer: L.Trainer) -> str | None:
    """The weights to test: the best or last checkpoint, or the in-memory ones without any."""
    if cfg.test_weights not in TEST_WEIGHTS:
        raise ValueError(f"test_weights must be one of {TEST_WEIGHTS}, got {cfg.test_weights!r}")
    if trainer.fast_dev_run:
        return None
    if cfg.test_weights == "last":
        return last_checkpoint_path(trainer)
    callback = monitored_checkpoint(trainer)
    return (callback.best_model_path or None) if callback is not None else None


def tested_model(
    cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, run_dir: Path
) -> tuple[L.LightningModule, str | None]:
    """The model to test and the checkpoint to load into it: ``model`` with the best or last
    checkpoint, or for ``test_weights=snapshots`` the ensemble of the run's snapshots (already
    loaded: dermlit/models/ensemble.py)."""
    if cfg.test_weights != SNAPSHOTS or trainer.fast_dev_run:
        return model, test_checkpoint(cfg, trainer)
    try:
        paths = resolve_snapshots(run_dir)
    except FileNotFoundError as err:
        raise InputError(f"test_weights=snapshots: {err}") from None
    log.info("Testing the ensemble of %d snapshots: %s", len(paths), [p.name for p in paths])
    return snapshot_ensemble(model, paths), None


def is_rank_zero() -> bool:
    """Rank of this process from the launcher's environment (set before the Trainer exists)."""
    return rank_zero_only.rank == 0


def log_test_scalars(loggers: list, metrics: dict[str, float], step: int) -> None:
    """The headline test scalars into the loggers (csv/metrics.csv, W&B), as ``trainer.test``
    logged them before the test split went through ``predict_split`` like every other split."""
    scalars = {
        f"test/{name}": float(metrics[f"test/{name}"])
        for name in SUMMARY_METRICS
        if isinstance(metrics.get(f"test/{name}"), int | float)
        and math.isfinite(metrics[f"test/{name}"])
    }
    for logger in loggers:
        logger.log_metrics(scalars, step=step)


def fit_and_test(
    cfg: DictConfig, run_dir: Path, ckpt_path: str | Path | None, status: RunStatus
) -> dict[str, float]:
    if cfg.trainer.get("max_epochs") == 0 and not cfg.trainer.get("fast_dev_run"):
        raise InputError(  # Lightning would fit nothing and the run test an untrained model
            "trainer.max_epochs=0 trains nothing: give at least 1 (or -1 with trainer.max_steps)"
        )
    if is_rank_zero():
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        (run_dir / ".hydra" / "resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, record_dir=run_dir)
    model = instantiate(cfg.model)
    loggers = instantiate_dict(cfg.get("logger"))
    callbacks = [*instantiate_dict(cfg.get("callbacks")), status.callback()]
    if cfg.test_weights == SNAPSHOTS and not any(
        isinstance(c, SnapshotCheckpoint) for c in callbacks
    ):  # refused before the fit, not after it
        raise InputError(
            "test_weights=snapshots tests the snapshots of a restarting LR schedule, but no "
            "callback keeps them: add callbacks=ema_snapshots optim=adamw_restarts"
        )
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    log_flat_config(loggers, cfg)
    outcome = "failed"
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        tested, weights = tested_model(cfg, trainer, model, run_dir)
        # one route for every split (dermlit-eval and dermlit predict share it)
        test = predict_split(trainer, tested, datamodule, "test", weights)
        # validation logits of the same weights: the temperature for calibration is fitted there
        val = predict_split(trainer, tested, datamodule, "val", weights)
        settings = instantiate(cfg.evaluation)
        adabn_images = None
        if settings.adabn:  # the tested weights are loaded now; a copy adapts to the test images
            device = trainer.strategy.root_device
            tested, adabn_images = adapted_for_test(tested, datamodule, "test", device)
            test = predict_split(trainer, tested, datamodule, "test")
        metrics: dict[str, float] = {}
        if trainer.is_global_zero:
            datamodule.splits.to_csv(run_dir / "splits.csv", index=False)
            # the TRAIN counts alone, the prior of posthoc=logit_adjust: `dermlit archive` keeps
            # them, never splits.csv (a per-image list of the dataset)
            write_class_counts(run_dir, list(datamodule.class_counts))
            if len(datamodule.skipped):
                datamodule.skipped.to_csv(run_dir / "skipped.csv", index=False)
            evaluation = write_evaluation(
                run_dir,
                test,
                val=val,
                settings=settings,
                posthoc=instantiate(cfg.posthoc) if cfg.get("posthoc") else None,
                class_counts=datamodule.class_counts,
                explainer=split_explainer(tested, datamodule, "test"),
                adabn_images=adabn_images,
            )
            metrics = evaluation.metrics
            log_test_scalars(loggers, metrics, trainer.global_step)
            log_report_to_loggers(loggers, evaluation.report)
        outcome = "success"
    finally:
        close_loggers(loggers, outcome)
    if trainer.is_global_zero:
        print_summary(metrics, "test", run_dir)
    return {**metrics, OBJECTIVE: best_validation_score(trainer)}
