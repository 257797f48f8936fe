"""EMA callback: timm's warmup, the hand-computed average under manual optimization (SAM), val and
val_ema side by side, Lightning #21724, which weights a checkpoint test uses, resume."""

from __future__ import annotations

import numpy as np
import pytest
import timm.utils
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from optim.helpers import TinyConvBN, classifier, images_and_targets, loader, sgd, trainer
from sklearn.metrics import accuracy_score, f1_score

from dermlit.callbacks import EMA, ema_decay
from dermlit.optim import SAM


def test_decay_warmup_matches_timm_model_ema_v3():
    ref = timm.utils.ModelEmaV3(TinyConvBN(), decay=0.999, use_warmup=True, min_decay=0.1)
    for n in [1, 2, 5, 10, 100, 1000, 10**5]:
        # our n = updates already averaged; timm's step counts the current one too
        assert ema_decay(n, 0.999, True, min_decay=0.1) == pytest.approx(ref.get_decay(n + 1))
    assert ema_decay(3, 0.99, warmup=False) == 0.99


class WeightRecorder(Callback):
    def __init__(self) -> None:
        self.weights: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights.append([p.detach().clone() for p in pl_module.parameters()])


def test_average_equals_hand_computed_ema_under_sam():
    images, targets = images_and_targets(40)
    ema, recorder = EMA(decay=0.9, warmup=True, export="raw"), WeightRecorder()
    model = classifier(SAM(optimizer=sgd()))
    t = trainer(max_epochs=1, callbacks=[recorder, ema])
    t.fit(model, loader(images, targets))
    assert t.global_step == 5 and ema.n_updates == 5  # updates under manual optimization
    expected = recorder.weights[0]
    for n, weights in enumerate(recorder.weights[1:], start=1):
        d = min(1 - (1 + n) ** (-2 / 3), 0.9)
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights, strict=True)]
    for ours, ref in zip(ema._average_model.module.parameters(), expected, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # export=raw: the module keeps the trained weights after fit
    for p, w in zip(model.parameters(), recorder.weights[-1], strict=True):
        torch.testing.assert_close(p, w, rtol=0, atol=0)


def logits_of(module, images):
    from optim.helpers import preprocess

    module.eval()
    with torch.no_grad():
        return module(preprocess(images))


def sklearn_macro_f1(y, pred):
    # torchmetrics' macro-F1 leaves out classes with neither support nor prediction
    return f1_score(y, pred, labels=np.union1d(y, pred), average="macro", zero_division=0)


def test_val_and_val_ema_logged_side_by_side():
    images, targets = images_and_targets(40)
    val_images, val_targets = images_and_targets(24, seed=1)
    ema = EMA(decay=0.5, warmup=False, export="raw")
    model = classifier(SAM(optimizer=sgd(lr=0.5)))
    t = trainer(max_epochs=1, callbacks=[ema])
    t.fit(model, loader(images, targets), loader(val_images, val_targets))
    m = t.callback_metrics
    for name in ("macro_f1", "balanced_accuracy", "accuracy", "loss"):
        assert f"val/{name}" in m and f"val_ema/{name}" in m
    y = val_targets.numpy()
    raw_logits = logits_of(model, val_images)
    avg_logits = logits_of(ema._average_model.module, val_images)
    assert not torch.allclose(raw_logits, avg_logits)  # two different weight sets validated
    raw, avg = raw_logits.argmax(-1).numpy(), avg_logits.argmax(-1).numpy()
    assert float(m["val/macro_f1"]) == pytest.approx(sklearn_macro_f1(y, raw), abs=1e-6)
    assert float(m["val_ema/macro_f1"]) == pytest.approx(sklearn_macro_f1(y, avg), abs=1e-6)
    assert float(m["val_ema/accuracy"]) == pytest.approx(accuracy_score(y, avg), abs=1e-6)
    ce = torch.nn.functional.cross_entropy
    assert float(m["val/loss"]) == pytest.approx(float(ce(raw_logits, val_targets)), abs=1e-5)
    assert float(m["val_ema/loss"]) == pytest.approx(float(ce(avg_logits, val_targets)), abs=1e-5)
    assert float(m["val/loss"]) != pytest.approx(float(m["val_ema/loss"]), abs=1e-4)


def test_a_never_updated_average_is_never_used(tmp_path):
    """Lightning #21724: before its first update the average is a copy of the INITIAL weights."""
    images, targets = images_and_targets(16)
    ema = EMA(update_starting_at_step=1000)
    model = classifier(SAM(optimizer=sgd(lr=0.5)))
    initial = [p.detach().clone() for p in model.parameters()]
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    t = trainer(max_epochs=1, callbacks=[ema, checkpoint], enable_checkpointing=True)
    t.fit(model, loader(images, targets), loader(images, targets))
    assert ema.n_updates == 0
    assert float(t.callback_metrics["val_ema/macro_f1"]) == float(
        t.callback_metrics["val/macro_f1"]
    )
    assert not torch.allclose(model.backbone.conv.weight, initial[0])  # trained weights kept
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    for key, value in ckpt["current_model_state"].items():
        torch.testing.assert_close(ckpt["state_dict"][key], value, rtol=0, atol=0)


class TestWeights(Callback):
    def on_test_start(self, trainer, pl_module) -> None:
        self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}


@pytest.mark.parametrize("export", ["ema", "raw"])
def test_testing_a_checkpoint_uses_the_exported_weights(tmp_path, export):
    images, targets = images_and_targets(24)
    recorder = TestWeights()
    ema = EMA(decay=0.5, warmup=False, export=export)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    model = classifier(SAM(optimizer=sgd(lr=0.5)))
    t = trainer(max_epochs=1, callbacks=[ema, checkpoint, recorder], enable_checkpointing=True)
    t.fit(model, loader(images, targets))
    t.test(model, loader(images, targets), ckpt_path="last")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    other = ckpt["current_model_state" if export == "ema" else "ema_state_dict"]
    key = "backbone.conv.weight"
    assert not torch.allclose(ckpt["state_dict"][key], other[key])
    torch.testing.assert_close(recorder.state[key], ckpt["state_dict"][key], rtol=0, atol=0)


class StartWeights(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.weight = pl_module.backbone.conv.weight.detach().clone()


def test_resuming_without_the_callback_trains_the_raw_weights(tmp_path):
    images, targets = images_and_targets(24)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    t = trainer(max_epochs=1, callbacks=[EMA(decay=0.5), checkpoint], enable_checkpointing=True)
    t.fit(classifier(SAM(optimizer=sgd(lr=0.5))), loader(images, targets))
    start = StartWeights()
    trainer(max_epochs=2, callbacks=[start]).fit(
        classifier(SAM(optimizer=sgd(lr=0.5))),
        loader(images, targets),
        ckpt_path=tmp_path / "last.ckpt",
    )
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    key = "backbone.conv.weight"
    assert not torch.allclose(ckpt["state_dict"][key], ckpt["current_model_state"][key])
    torch.testing.assert_close(start.weight, ckpt["current_model_state"][key], rtol=0, atol=0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="decay must be in"):
        EMA(decay=1.5)
    with pytest.raises(ValueError, match="export must be 'ema' or 'raw'"):
        EMA(export="best")
    with pytest.raises(ValueError, match="update_every_n_steps"):
        EMA(update_every_n_steps=0)
