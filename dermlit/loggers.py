"""Logger helpers: a flat config for dashboards, closing W&B between multirun jobs, and a CSV
logger that survives a resume."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf


def flatten(cfg: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_flat_config(loggers: list, cfg: DictConfig) -> None:
    """Dotted keys (``optim.optimizer.lr``) filter and group well in W&B and TensorBoard."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("paths", None)
    flat = flatten(container)
    for logger in loggers:
        logger.log_hyperparams(flat)


def close_loggers(loggers: list, status: str = "success") -> None:
    """Finish the W&B run, or the next multirun job would log into this one (docs/design.md,
    "DDP and Hydra").

    ``status`` is ``success`` or ``failed``; W&B marks a failed job by a non-zero exit code.
    """
    for logger in loggers:
        logger.finalize(status)
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=0 if status == "success" else 1)


def wandb_group(mode: object, sweep_dir: str) -> str | None:
    """A multirun's jobs share one W&B group, the sweep directory's name, so that the dashboard
    compares them side by side. A single run is ungrouped (None): Hydra still defines
    ``hydra.sweep.dir`` then, but it names no directory that exists."""
    multirun = getattr(mode, "name", str(mode)).endswith("MULTIRUN")
    return Path(str(sweep_dir)).name if multirun else None


def wandb_name(override_dirname: str, seed: int) -> str:
    """The job's overrides plus its seed: ``hydra.job.override_dirname`` leaves the seed out
    (conf/hydra/default.yaml) so that it names a configuration, but two seeds are two runs."""
    return ",".join(part for part in (str(override_dirname), f"seed={seed}") if part)


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv; drops its rows that the resumed run logs again."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._resumed = self._fs.isfile(self.metrics_file_path)
        if self._resumed:
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])

    def _check_log_dir_exists(self) -> None:
        """Lightning's version deletes metrics.csv here (with a warning)."""

    def save(self) -> None:
        if self._resumed and self.metrics:
            # rows from the first step this run logs on were written by the interrupted run
            # after its checkpoint (or are its test row): the resumed run writes them anew
            first = min(int(m["step"]) for m in self.metrics)
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                rows = [r for r in csv.DictReader(file) if _step(r) < first]
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(rows)
            self._resumed = False
        super().save()


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return float("nan")


class AppendingCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` that a resumed run appends to. Lightning's deletes an existing
    ``metrics.csv`` when it starts (fabric ``_ExperimentWriter._check_log_dir_exists``), so a
    resumed run (``resume=RUN_DIR``, a requeued job) lost every row before the resume. Rows of
    the interrupted run at or after the resumed run's first logged step are replaced by the
    resumed run's (it trains those steps again). A run directory holds one run (dermlit's
    run-directory guard), so an existing file is always this run's."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
