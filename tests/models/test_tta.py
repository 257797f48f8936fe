"""Test-time augmentation: exact dihedral views, probability averaging, the model's test path."""

import pytest
import torch
from torch import nn

from dermlit.models.tta import VIEWS, TestTimeAugmentation


def corner_classifier(x: torch.Tensor) -> torch.Tensor:
    """Logits from the four corner pixels of channel 0: every view moves them differently."""
    c = x[:, 0]
    return torch.stack([c[:, 0, 0], c[:, 0, -1], c[:, -1, 0], c[:, -1, -1]], dim=1) * 3.0


def test_views_are_the_eight_distinct_symmetries_of_the_square() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    images = {name: view(x) for name, view in VIEWS.items()}
    flat = {tuple(v.flatten().tolist()) for v in images.values()}
    assert len(flat) == 8  # all different
    # each view is a permutation of the pixels (no interpolation, no new values)
    for v in images.values():
        assert sorted(v.flatten().tolist()) == list(range(16))
    assert torch.equal(images["rot90"], torch.rot90(x, 1, (2, 3)))
    assert torch.equal(images["antitranspose"], x.flip(-1).flip(-2).transpose(-2, -1))


def test_identity_passes_logits_through() -> None:
    x = torch.randn(3, 1, 5, 5)
    tta = TestTimeAugmentation(["identity"])
    assert torch.equal(tta(corner_classifier, x), corner_classifier(x))


def test_averages_the_probabilities_of_the_views() -> None:
    x = torch.randn(2, 1, 6, 6)
    out = TestTimeAugmentation(["identity", "hflip", "rot90"])(corner_classifier, x)
    # by hand: the corners each view puts in the classifier's four slots
    c = x[:, 0]
    tl, tr, bl, br = c[:, 0, 0], c[:, 0, -1], c[:, -1, 0], c[:, -1, -1]
    by_hand = [
        torch.stack([tl, tr, bl, br], 1),
        torch.stack([tr, tl, br, bl], 1),  # hflip
        torch.stack([tr, br, tl, bl], 1),  # rot90 counter-clockwise
    ]
    expected = torch.stack([(3.0 * z).softmax(1) for z in by_hand]).mean(0)
    assert torch.allclose(out.softmax(1), expected, atol=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-6)  # log-probabilities


def test_an_invariant_classifier_is_unchanged_by_dihedral_tta() -> None:
    net = nn.Sequential(nn.Conv2d(3, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(4, 3, 8, 8)
    views = list(VIEWS)
    out = TestTimeAugmentation(views)(net, x)
    assert torch.allclose(out.softmax(1), net(x).softmax(1), atol=1e-6)


def test_bad_views_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown \['spin'\]"):
        TestTimeAugmentation(["identity", "spin"])
    with pytest.raises(ValueError, match="empty"):
        TestTimeAugmentation([])
    with pytest.raises(ValueError, match=r"need square images.*\(1, 1, 4, 6\)"):
        TestTimeAugmentation(["identity", "rot90"])(corner_classifier, torch.zeros(1, 1, 4, 6))
    # flips work on any aspect ratio
    TestTimeAugmentation(["identity", "hflip", "vflip", "rot180"])(
        corner_classifier, torch.zeros(1, 1, 4, 6)
    )
