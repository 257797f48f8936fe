"""``dermlit archive``: the small artefacts of a run, copied byte for byte; refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermlit.archive import ARTEFACTS, ArchiveError, archive_run
from dermlit.cli import main


def fake_run(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}\n")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "last.ckpt").write_bytes(b"big")
    return root


def test_copies_the_artefacts_and_leaves_the_checkpoints(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", ARTEFACTS[:-1])
    absent = archive_run(run, tmp_path / "kept")
    assert absent == [ARTEFACTS[-1]]
    for name in ARTEFACTS[:-1]:
        assert (tmp_path / "kept" / name).read_text() == f"content of {name}\n"
    assert not (tmp_path / "kept" / "checkpoints").exists()


def test_a_run_without_metrics_is_refused_by_name(tmp_path: Path, capsys) -> None:
    run = fake_run(tmp_path / "run", (".hydra/resolved.yaml", "predictions.csv"))
    with pytest.raises(ArchiveError, match="metrics.json"):
        archive_run(run, tmp_path / "kept")
    assert main(["archive", str(run), str(tmp_path / "kept")]) == 2
    assert "missing ['metrics.json']" in capsys.readouterr().err
