"""An output directory that cannot be written gets one line naming it, before anything runs.

The unwritable place is a path below a regular FILE (``.../file.txt/run``): nobody, root
included, can create it. The chmod variant only means something for a non-root user.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faults.fault_helpers import assert_refused, run_in_process, run_module


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A regular file: nothing can be created below it."""
    path = tmp_path / "file.txt"
    path.write_text("not a directory\n")
    return path


def test_dermlit_train_refuses_before_loading_data(tmp_path: Path, blocked: Path) -> None:
    """Through the real entry point: one line, exit status 2, no data cache touched."""
    cache = tmp_path / "cache"
    status, output = run_module(
        "dermlit.train",
        f"hydra.run.dir={blocked}/run",
        f"paths.cache_dir={cache}",
        "trainer.max_epochs=1",
    )
    assert_refused(
        status,
        output,
        f"dermlit-train: cannot create the output directory {blocked}/run: "
        f"{blocked} is a file, not a directory; choose a writable one: hydra.run.dir=DIR",
    )
    assert not cache.exists()  # nothing was loaded (the synthetic set would be generated there)
    assert len(output.strip().splitlines()) == 1, output


def test_paths_output_dir_and_a_sweep_dir_are_checked_too(tmp_path, blocked, capsys) -> None:
    from dermlit.train import main

    status = run_in_process(main, "dermlit-train", f"paths.output_dir={blocked}/out")
    assert_refused(status, capsys.readouterr().err, f"output directory {blocked}/out/runs/")
    status = run_in_process(
        main, "dermlit-train", "-m", f"hydra.sweep.dir={blocked}/sweep", "seed=0,1"
    )
    err = capsys.readouterr().err
    assert_refused(status, err, f"cannot create the sweep directory {blocked}/sweep", "sweep.dir")


def test_dermlit_eval_refuses_an_unwritable_output_dir(tmp_path, blocked, capsys) -> None:
    from dermlit.evaluate import main

    predictions = tmp_path / "predictions.csv"
    predictions.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC,label\na,1,0,0,0,0,0,0,mel\n")
    status = run_in_process(
        main, "dermlit-eval", f"predictions={predictions}", f"output_dir={blocked}/e"
    )
    assert_refused(
        status,
        capsys.readouterr().err,
        f"dermlit-eval: cannot create the output directory {blocked}/e: {blocked} is a file",
        "output_dir=DIR",
    )


def test_the_probe_leaves_nothing_behind(tmp_path: Path, blocked: Path) -> None:
    from dermlit.output_dir import output_dir_problem

    assert output_dir_problem(tmp_path / "a" / "b") is None
    assert os.listdir(tmp_path) == ["file.txt"]  # probed in tmp_path, nothing created
    assert output_dir_problem(blocked) == f"{blocked} is a file, not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway")
def test_a_read_only_parent_is_named(tmp_path: Path) -> None:
    from dermlit.output_dir import output_dir_problem

    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert output_dir_problem(parent / "run") == f"{parent} is not writable (Permission denied)"
    finally:
        parent.chmod(0o700)
