"""``trainer=cpu_fast`` (bf16 autocast) with channels_last: it trains with fp32 master weights,
its checkpoint loads into a fresh model that reproduces the logged validation macro-F1, and
dermlit-eval reproduces the run's own test metrics (it predicts in the run's precision)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.metrics import f1_score

from dermlit.checkpoints import load_model_weights, resolve_checkpoint
from dermlit.data.datamodule import DermDataModule
from dermlit.models.from_run import model_for_checkpoint
from tests.tiny_run import TINY_RUN

FAST = [*TINY_RUN, "trainer=cpu_fast", "model.channels_last=true", "bootstrap_resamples=50"]


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory, trained_run):
    run_dir = tmp_path_factory.mktemp("cpu-fast") / "run"
    with trained_run(run_dir, *FAST) as (cfg, metrics):
        yield run_dir, cfg, metrics


def test_trains_in_bf16_with_fp32_master_weights(fast_run) -> None:
    run_dir, cfg, _ = fast_run
    assert cfg.trainer.precision == "bf16-mixed" and cfg.model.channels_last
    ckpt = torch.load(resolve_checkpoint(run_dir, "best"), map_location="cpu", weights_only=False)
    floats = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
    moments = [
        t
        for state in ckpt["optimizer_states"][0]["state"].values()
        for t in state.values()
        if torch.is_tensor(t) and t.numel() > 1
    ]
    assert moments and all(t.dtype == torch.float32 for t in moments)


def test_checkpoint_reproduces_the_logged_validation_macro_f1(fast_run) -> None:
    run_dir, _, _ = fast_run
    resolved = OmegaConf.load(run_dir / ".hydra" / "resolved.yaml")
    model = model_for_checkpoint(resolved.model)
    load_model_weights(model, resolve_checkpoint(run_dir, "best"), "default")
    model.eval()
    data: DermDataModule = instantiate(resolved.data)
    data.setup("fit")
    predictions, targets = [], []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for images, y in data.loader("val"):
            x = (images.permute(0, 3, 1, 2).float() / 255.0 - model.mean) / model.std
            x = x.contiguous(memory_format=torch.channels_last)
            predictions.append(model(x).float().argmax(1))
            targets.append(y)
    by_hand = f1_score(torch.cat(targets), torch.cat(predictions), average="macro")
    logged = pd.read_csv(run_dir / "csv" / "metrics.csv")["val/macro_f1"].dropna()
    assert len(logged) == 1
    assert by_hand == pytest.approx(float(logged.iloc[0]), abs=1e-6)


def test_eval_reproduces_the_runs_test_metrics(fast_run, eval_in_process) -> None:
    run_dir, _, _ = fast_run
    evaluation = eval_in_process(f"run_dir={run_dir}", "bootstrap_resamples=50")
    ran = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test/macro_f1", "test/balanced_accuracy", "test/nll", "test/ece"):
        assert evaluation.metrics[key] == pytest.approx(ran[key], abs=1e-9), key


def test_eval_in_fp32_is_close_but_not_the_runs_predictions(fast_run, eval_in_process) -> None:
    """What ``precision=null`` fixes: predicting a bf16 run in fp32 moves the probabilities."""
    run_dir, _, _ = fast_run
    out = run_dir / "eval-fp32"
    fp32 = eval_in_process(
        f"run_dir={run_dir}", "precision=32-true", f"output_dir={out}", "bootstrap_resamples=50"
    )
    ran = json.loads((run_dir / "metrics.json").read_text())
    assert fp32.metrics["test/nll"] != ran["test/nll"]
    assert fp32.metrics["test/nll"] == pytest.approx(ran["test/nll"], rel=0.05)
