from pathlib import Path

import pytest
import torch

from dermlit.checkpoints import (
    EMA_STATE,
    RAW_STATE,
    STATE_DICT,
    load_model_weights,
    resolve_checkpoint,
    select_weights,
    to_lightning_layout,
    to_raw_export_layout,
    train_raw_weights,
)
from dermlit.errors import InputError
from dermlit.models.backbones import create_backbone


def save_ckpt(path: Path, model: torch.nn.Module) -> Path:
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


class Wrapper(torch.nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.backbone = create_backbone(name)


def test_weights_round_trip(tmp_path: Path) -> None:
    source = Wrapper("resnet10t")
    target = Wrapper("resnet10t")
    load_model_weights(target, save_ckpt(tmp_path / "a.ckpt", source.backbone))
    for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_of_another_architecture_is_refused_by_name(tmp_path: Path) -> None:
    path = save_ckpt(tmp_path / "other.ckpt", create_backbone("resnet18"))
    with pytest.raises(ValueError, match=r"other\.ckpt does not fit this model \(Wrapper\)"):
        load_model_weights(Wrapper("resnet10t"), path)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "x.ckpt").write_text("hello")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_model_weights(Wrapper("resnet10t"), tmp_path / "x.ckpt")
    torch.save({"weights": 1}, tmp_path / "y.ckpt")
    with pytest.raises(ValueError, match="no 'state_dict'"):
        load_model_weights(Wrapper("resnet10t"), tmp_path / "y.ckpt")


def test_missing_best_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no best-"):
        resolve_checkpoint(tmp_path, "best")


def test_unknown_backbone_is_named() -> None:
    with pytest.raises(ValueError, match="unknown timm model 'resnet19x'"):
        create_backbone("resnet19x")


def ema_checkpoint(raw: dict, average: dict) -> dict:
    """Lightning's WeightAveraging layout: the average in state_dict, raw beside it."""
    return {STATE_DICT: dict(average), RAW_STATE: dict(raw)}


def test_layouts_convert_both_ways_and_say_which_weights_are_which(tmp_path: Path) -> None:
    raw, average = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    ckpt = ema_checkpoint(raw, average)
    to_raw_export_layout(ckpt)  # dermlit's export=raw: raw in state_dict, average beside it
    assert set(ckpt) == {STATE_DICT, EMA_STATE} and ckpt[STATE_DICT] == raw
    assert select_weights(ckpt, "ema", tmp_path) == average
    assert select_weights(ckpt, "raw", tmp_path) is None  # state_dict is raw
    to_lightning_layout(ckpt)
    assert ckpt == ema_checkpoint(raw, average)
    assert select_weights(ckpt, "ema", tmp_path) is None  # state_dict is the average
    assert select_weights(ckpt, "raw", tmp_path) == raw
    train_raw_weights(ckpt)
    assert ckpt[STATE_DICT] == raw
    with pytest.raises(InputError, match="holds no EMA weights"):
        select_weights({STATE_DICT: raw}, "ema", tmp_path)
    with pytest.raises(InputError, match=r"weights must be one of \('default', 'raw', 'ema'\)"):
        select_weights(ckpt, "best", tmp_path)


def test_one_read_loads_the_chosen_weight_set(tmp_path: Path, monkeypatch) -> None:
    raw, average = Wrapper("resnet10t"), Wrapper("resnet10t")
    prefixed = {
        name: {f"backbone.{k}": v for k, v in m.backbone.state_dict().items()}
        for name, m in (("raw", raw), ("ema", average))
    }
    path = tmp_path / "ema.ckpt"
    torch.save(ema_checkpoint(prefixed["raw"], prefixed["ema"]), path)
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a) or real_load(*a, **k))
    target = Wrapper("resnet10t")
    load_model_weights(target, path, "raw")
    assert len(reads) == 1
    for key, value in target.state_dict().items():
        assert torch.equal(value, prefixed["raw"][key]), key
    load_model_weights(target, path)  # default: the state_dict, the average
    for key, value in target.state_dict().items():
        assert torch.equal(value, prefixed["ema"][key]), key
