"""``dermlit-eval``: evaluate a run's checkpoint on a split; writes metrics.json,
predictions.csv and report/ (the same writer ``dermlit-train`` uses for its test split)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dermlit.checkpoints import load_model_weights, resolve_checkpoint
from dermlit.config import CONF_DIR, register_resolvers
from dermlit.rundir import print_summary, write_evaluation

log = logging.getLogger(__name__)
register_resolvers()


def run_config(run_dir: Path) -> DictConfig:
    path = run_dir / ".hydra" / "resolved.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a dermlit run directory: {path} is missing")
    return OmegaConf.load(path)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(cfg.run_dir)
    train_cfg = run_config(run_dir)
    datamodule = instantiate(train_cfg.data)
    datamodule.setup("test")
    model = instantiate(train_cfg.model)
    ckpt = resolve_checkpoint(run_dir, cfg.checkpoint)
    load_model_weights(model, ckpt)
    trainer = L.Trainer(
        accelerator=cfg.accelerator, devices=1, logger=False, enable_checkpointing=False
    )
    batches = trainer.predict(model, dataloaders=datamodule.loader(cfg.split))
    logits = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches]).numpy()
    image_ids = datamodule.frame(cfg.split)["image_id"].tolist()
    out_dir = Path(cfg.output_dir)
    metrics = write_evaluation(
        out_dir, image_ids, logits.softmax(-1).numpy(), targets, split=cfg.split,
        n_resamples=cfg.bootstrap_resamples, seed=cfg.seed,
    )
    print_summary(metrics, cfg.split, out_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
