"""Helpers of the fault-injection suite (tests/faults/): each test there feeds dermlit one
ordinary mistake and checks that it is refused with a message naming the offender and what to
do (or handled and counted), never silently accepted."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: exit status of a refused input (dermlit.errors.INPUT_ERROR_EXIT; literal: a test must not
#: follow the code it checks)
REFUSED = 2


def run_module(module: str, *args: str, timeout: int = 300) -> tuple[int, str]:
    """``python -m module args`` from the repository, as a user's shell would run it:
    ``(exit status, stdout + stderr)``. Costs the imports (~15 s of CPU): use sparingly."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def run_in_process(main: Callable[[], object], program: str, *args: str) -> int:
    """A Hydra app's ``main()`` with this command line, in this process; its exit status.
    Pair with pytest's ``capsys`` to read what it printed.

    Hydra configures logging for the job (handlers on the root logger writing to the streams of
    the moment, i.e. capsys's); they are removed afterwards, or later tests would log into a
    closed stream."""
    saved, root = sys.argv, logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sys.argv = [program, *args]
    try:
        main()
        return 0
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else 1
    finally:
        sys.argv = saved
        root.handlers[:] = handlers
        root.setLevel(level)


def assert_refused(status: int, output: str, *expected: str) -> None:
    """Refused: exit status 2, no traceback, and ``output`` names every ``expected`` string."""
    shown = output[-6000:]
    assert status == REFUSED, shown
    assert "Traceback" not in output, shown
    for text in expected:
        assert text in output, f"{text!r} not in:\n{shown}"
