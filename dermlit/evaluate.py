"""``dermlit-eval``: evaluate a run's checkpoint (raw or EMA weights) on a split of its data or on
another dataset, or re-evaluate an existing predictions.csv; writes metrics.json,
predictions.csv and report/ (the same writer ``dermlit-train`` uses for its test split).

    dermlit-eval run_dir=RUN                                  # best checkpoint, test split
    dermlit-eval run_dir=RUN checkpoint=last weights=raw split=val
    dermlit-eval run_dir=RUN data=isic_csv data.source.csv=GT.csv data.source.images=DIR
    dermlit-eval run_dir=RUN data=folder data.source.root=DIR  # unlabelled: predictions only
    dermlit-eval predictions=RUN/predictions.csv val_predictions=RUN/val_predictions.csv \
        evaluation/cost=uniform
    dermlit-eval run_dir=RUN tta=dihedral posthoc=logit_adjust   # try TTA / a decision rule
    dermlit-eval run_dir=RUN checkpoint=snapshots split=val      # the snapshot ensemble
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dermlit.checkpoints import SNAPSHOTS
from dermlit.config import CONF_DIR, checkpoint_name, register_resolvers
from dermlit.errors import InputError
from dermlit.eval_overrides import EVAL_DATA_KEYS
from dermlit.evaluation.class_counts import train_class_counts, write_class_counts
from dermlit.evaluation.settings import EvalSettings
from dermlit.explain.review import ErrorExplainer, split_explainer
from dermlit.models.ensemble import with_checkpoint_weights
from dermlit.models.from_run import model_for_checkpoint
from dermlit.rundir import (
    Evaluation,
    SplitOutputs,
    adapted_for_test,
    predict_split,
    print_summary,
    write_evaluation,
)

log = logging.getLogger(__name__)


def eval_dir(
    run_dir: str | None,
    predictions: str | None,
    split: str,
    checkpoint: str,
    weights: str,
    data_csv: str | None = None,
    data_root: str | None = None,
) -> str:
    """``RUN/eval/<split>-<checkpoint>[-<weights>]``, ``RUN/eval/<dataset>-<checkpoint>...`` for
    another dataset, or ``<predictions folder>/eval/<predictions stem>`` for a CSV."""
    if predictions:
        return str(Path(predictions).parent / "eval" / f"{Path(predictions).stem}-{split}")
    if not run_dir:
        raise InputError("dermlit-eval needs run_dir=RUN_DIR or predictions=PATH/predictions.csv")
    name = Path(data_csv).stem if data_csv else Path(data_root).name if data_root else split
    suffix = "" if weights == "default" else f"-{weights}"
    return str(Path(run_dir) / "eval" / f"{name}-{checkpoint_name(checkpoint)}{suffix}")


register_resolvers()
if not OmegaConf.has_resolver("dermlit_eval_dir"):
    OmegaConf.register_new_resolver("dermlit_eval_dir", eval_dir)


def run_config(run_dir: Path) -> DictConfig:
    path = run_dir / ".hydra" / "resolved.yaml"
    if not path.is_file():
        raise InputError(f"{run_dir} is not a dermlit run directory: {path} is missing")
    return OmegaConf.load(path)


def eval_datamodule(train_data: DictConfig, data: DictConfig):
    """The run's data settings (image size, normalisation) with another ``source``."""
    node = OmegaConf.create(OmegaConf.to_container(train_data, resolve=True))
    chosen = OmegaConf.to_container(data, resolve=True)
    for key in EVAL_DATA_KEYS:  # dermlit.eval_overrides refuses overrides of the other keys
        if key in chosen:
            node[key] = chosen[key]
    node.sampler = None
    return instantiate(node)


def checkpoint_model(
    train_cfg: DictConfig, run_dir: Path, checkpoint: str, weights: str
) -> tuple[L.LightningModule, str]:
    """The run's model with the ``weights`` of ``checkpoint`` (best, last, a path, or
    ``snapshots``: the ensemble of every snapshot) and a name for them."""
    model = model_for_checkpoint(train_cfg.model)
    model, paths = with_checkpoint_weights(model, run_dir, checkpoint, weights)
    if checkpoint == SNAPSHOTS:
        return model, f"the ensemble of {len(paths)} snapshots ({', '.join(p.name for p in paths)})"
    return model, paths[0].name


def predict_from_checkpoint(
    cfg: DictConfig, settings: EvalSettings
) -> tuple[SplitOutputs, SplitOutputs | None, str, pd.DataFrame, ErrorExplainer, int | None]:
    """Test outputs, the run's validation outputs (for the temperature), a description, the
    images the data source skipped (``data.on_error=skip``), the Grad-CAM explainer of the
    split's errors (these weights) and, with ``settings.adabn``, how many images the BatchNorm
    statistics were re-estimated on (the split's; validation keeps the trained ones)."""
    run_dir = Path(cfg.run_dir)
    train_cfg = run_config(run_dir)
    if cfg.get("tta") is not None:  # e.g. dermlit-eval run_dir=RUN tta=dihedral
        train_cfg.model.tta = cfg.tta
    model, ckpt_label = checkpoint_model(train_cfg, run_dir, str(cfg.checkpoint), str(cfg.weights))
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=cfg.get("precision") or train_cfg.trainer.get("precision", "32-true"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    run_data = instantiate(train_cfg.data)
    run_data.setup("test")
    data = run_data if cfg.get("data") is None else eval_datamodule(train_cfg.data, cfg.data)
    data.setup("test")
    if len(data.frame(cfg.split)) == 0:
        raise InputError(
            f"split {cfg.split!r} of {data.source!r} is empty (external sources put every image "
            "in split=test)"
        )
    if cfg.get("data") is not None:  # external data may hold the run's training images (issue 14)
        from dermlit.data.overlap import warn_training_overlap

        warn_training_overlap(run_data, data, cfg.split)
    # temperature: fitted on the RUN's validation split, with these weights (needs labels)
    labelled = (data.frame(cfg.split)["target"] >= 0).any()
    val = predict_split(trainer, model, run_data, "val") if labelled else None
    adabn_images = None
    if settings.adabn:  # a copy adapts to the evaluated images; the checkpoint is not touched
        device = trainer.strategy.root_device
        model, adabn_images = adapted_for_test(model, data, cfg.split, device)
    outputs = predict_split(trainer, model, data, cfg.split)
    weights = "" if cfg.weights == "default" else f", {cfg.weights} weights"
    description = f"{ckpt_label}{weights} on {data.source!r} ({cfg.split})"
    explainer = split_explainer(model, data, cfg.split)
    return outputs, val, description, data.skipped, explainer, adabn_images


def joined_metadata(
    metadata: DictConfig, outputs: SplitOutputs, val: SplitOutputs | None
) -> tuple[SplitOutputs, SplitOutputs | None]:
    """``metadata.csv`` joined onto predictions read from files (subgroups, per source)."""
    table = pd.read_csv(metadata.csv, dtype={metadata.id_column: str})
    columns = (table, metadata.id_column, metadata.source_column)
    return outputs.with_metadata(*columns), None if val is None else val.with_metadata(*columns)


def evaluate(cfg: DictConfig) -> Evaluation:
    settings = instantiate(cfg.evaluation)
    skipped = explainer = adabn_images = None
    posthoc = instantiate(cfg.posthoc) if cfg.get("posthoc") else None
    if cfg.predictions:
        if settings.adabn:
            raise InputError(
                "evaluation.adabn=true needs a model (run_dir=RUN): predictions= has no weights"
            )
        are = str(cfg.predictions_are)
        outputs = SplitOutputs.from_predictions(cfg.predictions, are)
        val = (
            SplitOutputs.from_predictions(cfg.val_predictions, are) if cfg.val_predictions else None
        )
        if cfg.metadata.csv:
            outputs, val = joined_metadata(cfg.metadata, outputs, val)
        source = str(cfg.predictions)
        counts = train_class_counts(Path(cfg.predictions).parent / "splits.csv", posthoc)
    else:  # the counts first: a refusal before the predictions, not after them
        counts = train_class_counts(Path(cfg.run_dir) / "splits.csv", posthoc)
        outputs, val, source, skipped, explainer, adabn_images = predict_from_checkpoint(
            cfg, settings
        )
    out_dir = Path(cfg.output_dir)
    if posthoc is not None and posthoc.fitted_on_validation and val is None:
        raise InputError("posthoc adjustment is fitted on validation: give val_predictions=")
    evaluation = write_evaluation(
        out_dir,
        outputs,
        cfg.split,
        val,
        settings,
        title=f"Evaluation of {source}",
        posthoc=posthoc,
        class_counts=counts,
        explainer=explainer,
        adabn_images=adabn_images,
    )
    if skipped is not None and len(skipped):  # what data.on_error=skip dropped, as in a run
        skipped.to_csv(out_dir / "skipped.csv", index=False)
    if counts is not None:  # an archived evaluation can then be re-decided with a prior too
        write_class_counts(out_dir, counts)
    print_summary(evaluation.metrics, cfg.split, out_dir)
    return evaluation


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)  # an InputError (a CheckpointError too) ends in one line: InputErrorExit


if __name__ == "__main__":
    main()
