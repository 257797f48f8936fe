from pathlib import Path

import pytest
import torch

from dermlit.checkpoints import load_model_weights, resolve_checkpoint
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
