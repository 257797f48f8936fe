"""Per-source metrics (test/source/<name>/...): against scikit-learn on a constructed split of
two sources, the report's carrying sentence, the absent column, and a csv source's column."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from dermlit.constants import CLASS_TO_INDEX, CLASSES
from dermlit.evaluation.settings import EvalSettings
from dermlit.rundir import SplitOutputs, predict_split, write_evaluation

MEL = CLASS_TO_INDEX["mel"]


def two_source_outputs(seed: int = 0) -> SplitOutputs:
    """clinic_a: 120 images, 90 % decided right; clinic_b: 80 images, 40 % right."""
    rng = np.random.default_rng(seed)
    sizes = {"clinic_a": (120, 0.9), "clinic_b": (80, 0.4)}
    logits, targets, sources = [], [], []
    for name, (n, right) in sizes.items():
        t = np.arange(n) % len(CLASSES)  # every class in both sources
        wrong = rng.uniform(size=n) > right
        decided = np.where(wrong, (t + rng.integers(1, len(CLASSES), n)) % len(CLASSES), t)
        z = rng.normal(0, 1, (n, len(CLASSES)))
        z[np.arange(n), decided] += 2.5
        logits.append(z)
        targets.append(t)
        sources += [name] * n
    ids = [f"IMG_{i:04d}" for i in range(len(sources))]
    meta = pd.DataFrame({"image_id": ids, "dataset": sources, "age": 50.0})
    return SplitOutputs(ids, np.concatenate(logits), np.concatenate(targets), meta, "dataset")


def by_hand_ece(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    conf, hit = probs.max(1), probs.argmax(1) == targets
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    gaps = [abs((hit[bins == b] - conf[bins == b]).sum()) for b in range(n_bins)]
    return float(sum(gaps) / len(targets))


@pytest.fixture
def settings() -> EvalSettings:
    return EvalSettings.defaults(n_resamples=200)


def test_per_source_metrics_match_sklearn(tmp_path: Path, settings: EvalSettings) -> None:
    outputs = two_source_outputs()
    write_evaluation(tmp_path, outputs, "test", settings=settings)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    probs, targets = outputs.probs, outputs.targets
    sources = outputs.metadata["dataset"].to_numpy()
    correct = probs.argmax(1) == targets
    for name in ("clinic_a", "clinic_b"):
        member = sources == name
        p, t = probs[member], targets[member]
        pred = p.argmax(1)
        key = f"test/source/{name}/"
        expected = {
            "macro_f1": f1_score(t, pred, average="macro"),
            "balanced_accuracy": balanced_accuracy_score(t, pred),
            "accuracy": accuracy_score(t, pred),
            "recall_mel": recall_score(t, pred, labels=[MEL], average="macro"),
            "ece": by_hand_ece(p, t),
        }
        for metric, value in expected.items():
            assert metrics[key + metric] == pytest.approx(value, abs=1e-9), (name, metric)
            low, high = metrics[key + metric + "_ci_low"], metrics[key + metric + "_ci_high"]
            if low is not None:  # a biased bootstrap has no interval (intervals.py)
                assert low <= value + 1e-12 and value - 1e-12 <= high, (name, metric)
        assert metrics[key + "n_images"] == member.sum()
        assert metrics[key + "share_of_images"] == pytest.approx(member.mean())
        share = correct[member].sum() / correct.sum()
        assert metrics[key + "share_of_correct"] == pytest.approx(share)
        prior = np.bincount(t, minlength=len(CLASSES)) / len(t)
        for c, v in zip(CLASSES, prior, strict=True):
            assert metrics[key + f"prior_{c}"] == pytest.approx(v)


def test_report_names_the_carrying_source(tmp_path: Path, settings: EvalSettings) -> None:
    outputs = two_source_outputs()
    write_evaluation(tmp_path, outputs, "test", settings=settings)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    text = (tmp_path / "report" / "report.md").read_text()
    overall = metrics["test/accuracy"]
    acc_a, acc_b = (metrics[f"test/source/{s}/accuracy"] for s in ("clinic_a", "clinic_b"))
    assert acc_a > acc_b  # as constructed
    assert f"The headline accuracy {overall:.2f} is carried by clinic_a: {acc_a:.2f} there" in text
    assert f"{acc_b:.2f} on clinic_b" in text
    assert "## Per source" in text
    assert text.index("## Per source") < text.index("## Per class")  # next to the headline
    assert "No per-source metrics" not in text


def test_no_source_column_no_section_said_once(tmp_path: Path, settings: EvalSettings) -> None:
    outputs = two_source_outputs()
    outputs.source_column = None
    write_evaluation(tmp_path, outputs, "test", settings=settings)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert not [k for k in metrics if k.startswith("test/source/")]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Per source" not in text
    assert text.count("No per-source metrics: the data source declares no source column") == 1


def write_csv_data(root: Path, sites: list[str]) -> Path:
    """A csv-source dataset: 7 classes x 4 lesions x 1 image, flat colours, a `site` column."""
    from PIL import Image

    (root / "img").mkdir(parents=True)
    rows = []
    for c, label in enumerate(CLASSES):
        for k in range(4 * len(sites)):
            name = f"im_{c}_{k}.png"
            Image.new("RGB", (24, 24), (30 * c, 100, 200 - 20 * c)).save(root / "img" / name)
            rows.append((f"img/{name}", label, f"P{c}_{k}", sites[k % len(sites)]))
    pd.DataFrame(rows, columns=["file", "dx", "patient", "site"]).to_csv(
        root / "labels.csv", index=False
    )
    return root


def test_csv_source_column_reaches_split_outputs(tmp_path: Path) -> None:
    from dermlit.data.datamodule import DermDataModule
    from dermlit.data.sources import CSVSource

    root = write_csv_data(tmp_path / "mine", ["north", "south"])
    source = CSVSource(root, path_column="file", label_column="dx", group_column="patient")
    source.source_column = "site"  # as data.source.source_column=site configures it
    dm = DermDataModule(source, image_size=16, cache_dir=tmp_path / "cache", decode_workers=1)
    dm.setup("test")
    assert dm.source_column == "site"
    frame = dm.frame("test")
    n = len(frame)
    logits = torch.zeros(n, len(CLASSES))
    targets = torch.as_tensor(frame["target"].to_numpy().copy())
    trainer = SimpleNamespace(world_size=1, predict=lambda *a, **k: [(logits, targets)])
    outputs = predict_split(trainer, None, dm, "test")
    assert outputs.source_column == "site"
    assert outputs.metadata["site"].tolist() == frame["site"].tolist()
    assert set(outputs.metadata["site"]) <= {"north", "south"}


def test_csv_source_refuses_an_absent_source_column(tmp_path: Path) -> None:
    from dermlit.data.sources import CSVSource

    root = write_csv_data(tmp_path / "mine", ["north"])
    source = CSVSource(root, path_column="file", label_column="dx", source_column="clinic")
    with pytest.raises(ValueError, match=r"source_column='clinic'"):
        source.load()
