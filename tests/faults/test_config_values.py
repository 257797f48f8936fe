"""Config values that used to fail late or not at all: a ZeroDivisionError for
``data.image_size=0``, torch's ValueError for ``data.batch_size=0``, a traceback with exit
status 1 for a missing dataset, and ``trainer.max_epochs=0`` testing an untrained model with
exit status 0. Each is now an InputError (one line, exit status 2) that names the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dermlit.data.datamodule import DermDataModule
from dermlit.data.sources import HAM10000Source
from dermlit.errors import InputError
from tests.tiny_run import TINY_RUN


@pytest.mark.parametrize("key", ["image_size", "batch_size"])
@pytest.mark.parametrize("value", [0, -3])
def test_sizes_must_be_positive(key: str, value: int, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"data\.{key} must be a positive integer, got {value}"):
        DermDataModule(HAM10000Source(tmp_path), **{key: value})  # refused before any read


def test_a_missing_dataset_is_an_input_error_and_still_a_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="HAM10000 metadata not found") as err:
        HAM10000Source(tmp_path / "nowhere").load()
    assert isinstance(err.value, FileNotFoundError)  # `dermlit data check` catches that


def test_zero_epochs_is_refused_before_training(train_in_process, tmp_path) -> None:
    run = tmp_path / "run"
    with pytest.raises(InputError, match="trainer.max_epochs=0 trains nothing"):
        train_in_process(run, *TINY_RUN, "trainer.max_epochs=0")
    assert not (run / "metrics.json").exists() and not (run / ".hydra" / "resolved.yaml").exists()
    status = json.loads((run / "status.json").read_text())  # what sweep-summary lists
    assert status["state"] == "failed" and "max_epochs=0 trains nothing" in status["error"]
