"""Fault: a non-finite loss on ONE rank under DDP (issue 13, item 10). Every rank must refuse
the same update (the decision is all-reduced) instead of the healthy ranks hanging in the next
collective, and the rank that saw it names its batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two processes starting up: ~40 s on 2 shared cores

SCRIPT = Path(__file__).with_name("ddp_nonfinite_script.py")


def test_every_rank_refuses_the_update_and_rank_zero_names_the_batch(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so that a hung child rank can be killed with its group
    )
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("a rank hung: the non-finite decision was not shared across ranks")
    missing = [r for r in (0, 1) if not (tmp_path / f"rank{r}.json").is_file()]
    assert not missing, f"rank(s) {missing} did not get to report the error:\n{err[-3000:]}"
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert "non-finite training loss (nan) at epoch 0, batch 1 of the epoch" in r0["raised"]
    assert "non-finite loss or gradient on another rank at epoch 0, batch 1" in r1["raised"]
    for r in (r0, r1):
        assert "optimizer step 2 was NOT applied" in r["raised"]
        assert r["global_step"] == 1 and r["finite"]
