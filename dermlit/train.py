"""``dermlit-train``: compose the config, refuse what cannot run, then fit and test
(:mod:`dermlit.fit`). Light on purpose: Hydra's callbacks refuse an occupied run directory and
:func:`dermlit.resume.resumable` a bad ``resume=`` before this module imports Lightning (~6 s)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dermlit.config import CONF_DIR, register_resolvers
from dermlit.resume import requeued_checkpoint, resumable
from dermlit.status import read_status, recorded_status

log = logging.getLogger(__name__)
register_resolvers()


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test, and write the run directory (rank 0 only; every rank trains and evaluates);
    RUN_DIR/status.json records how it ended (dermlit/status.py)."""
    from dermlit.fit import fit_and_test, is_rank_zero

    run_dir = Path(cfg.paths.run_dir)
    # a requeued SLURM job re-runs its command (ckpt_path=null) and continues its own run
    ckpt_path = cfg.ckpt_path or requeued_checkpoint(run_dir, read_status(run_dir))
    with recorded_status(run_dir, enabled=is_rank_zero(), resumed_from=ckpt_path) as status:
        return fit_and_test(cfg, run_dir, ckpt_path, status)


@resumable  # resume=RUN_DIR is expanded before Hydra parses the command line
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the best validation score (the checkpoint's monitor, ``val/macro_f1`` by
    default) for Hydra sweepers (``hydra/sweeper=optuna``): tune on validation, not on test."""
    log.info("Run directory: %s", HydraConfig.get().runtime.output_dir)
    log.debug("Config:\n%s", OmegaConf.to_yaml(cfg))
    from dermlit.distributed import distributed_job
    from dermlit.tuning import OBJECTIVE

    with distributed_job():
        metrics = train(cfg)
    return metrics.get(OBJECTIVE)


if __name__ == "__main__":
    main()
