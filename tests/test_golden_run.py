"""The golden run: a small end-to-end run on the embedded synthetic data whose metrics.json must
stay what it was when tests/golden/ was written (within 1e-9), so that a refactor that claims to
keep behaviour is checked on every metric the README reports.

Every key of the golden file must be in the new metrics.json with the same value (absolute or
relative difference <= 1e-9; ``None`` equal to ``None``). Keys the golden file does not have are
allowed: later work may add metrics. A change that is MEANT to change the numbers regenerates
the files (``DERMLIT_WRITE_GOLDEN=1 pytest tests/test_golden_run.py``) in a commit of its own
that says why.

The run: 4 epochs on 700 synthetic images at 32 px, ResNet-18 from scratch, balanced softmax,
the EMA callback (export=ema) (golden/metrics.json); then ``dermlit-eval``'s ``evaluate`` on the
same run with the raw weights (the other weight set of an EMA checkpoint) and post-hoc logit
adjustment (golden/eval_raw_metrics.json). One CPU thread, deterministic
algorithms: the numbers are the same on every run on one machine.

They are not the same on another CPU (its kernels round differently: the AMX Xeon and the AMD
EPYC of two sessions differ in 65 of 245 values), so the golden files are kept per CPU kind,
``tests/golden/<cpu kind>/``. On a CPU kind without golden files the test skips and says how to
record them: ``DERMLIT_WRITE_GOLDEN=1`` on a commit whose behaviour is known good (the one the
files of another CPU kind were checked on), never on the change under test.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

GOLDEN_ROOT = Path(__file__).resolve().parent / "golden"


def cpu_kind(cpuinfo: str) -> str:
    """``intel-xeon-processor-amx``, ``amd-epyc``: the CPU model name from /proc/cpuinfo, made
    a folder name, plus ``-amx`` where the CPU has AMX tiles (other matmul kernels)."""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    name = re.sub(r"\((r|tm)\)", "", model.group(1).lower()) if model else "unknown-cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    flags = re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE)
    return slug + ("-amx" if flags and "amx_bf16" in flags.group(1).split() else "")


def this_cpu_kind() -> str:
    info = Path("/proc/cpuinfo")
    return cpu_kind(info.read_text() if info.is_file() else "")


GOLDEN = GOLDEN_ROOT / this_cpu_kind()
TOLERANCE = 1e-9
OVERRIDES = [
    "data.source.n_images=700",
    "data.image_size=32",
    "data.batch_size=32",
    "trainer.max_epochs=4",
    "optim.optimizer.lr=3e-3",
    "loss=balanced_softmax",
    "trainer.deterministic=true",
    "bootstrap_resamples=200",
    "callbacks=ema",
    "callbacks.ema.decay=0.9",
    "~callbacks.progress_bar",
    "seed=3",
]


def differences(golden: dict, new: dict) -> list[str]:
    """Golden keys whose new value is missing or differs by more than TOLERANCE."""
    bad = []
    for key, want in golden.items():
        if key not in new:
            bad.append(f"{key}: missing (golden {want!r})")
            continue
        got = new[key]
        if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
            if not math.isclose(want, got, rel_tol=TOLERANCE, abs_tol=TOLERANCE):
                bad.append(f"{key}: {got!r} != golden {want!r}")
        elif got != want:
            bad.append(f"{key}: {got!r} != golden {want!r}")
    return bad


def check_against_golden(name: str, metrics_json: Path) -> None:
    new = json.loads(metrics_json.read_text())
    path = GOLDEN / name
    if os.environ.get("DERMLIT_WRITE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
    golden = json.loads(path.read_text())
    bad = differences(golden, new)
    assert not bad, f"{len(bad)} of {len(golden)} golden values changed:\n" + "\n".join(bad[:40])


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_differences_flags_changes_within_and_beyond_the_tolerance() -> None:
    golden = {"a": 1.0, "b": None, "c": 7, "d": 0.5}
    assert differences(golden, {"a": 1.0 + 1e-12, "b": None, "c": 7, "d": 0.5, "new": 1}) == []
    bad = differences(golden, {"a": 1.0 + 1e-6, "b": 0.1, "c": 7})
    assert [line.split(":")[0] for line in bad] == ["a", "b", "d"]


def test_cpu_kind_names_the_model_and_amx() -> None:
    xeon = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n"
    assert cpu_kind(xeon) == "intel-xeon-processor-amx"
    epyc = "model name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16\n"
    assert cpu_kind(epyc) == "amd-epyc"
    assert cpu_kind("") == "unknown-cpu"


def test_golden_run_reproduces_every_golden_metric(
    tmp_path: Path, train_in_process, eval_in_process, one_thread
) -> None:
    recording = os.environ.get("DERMLIT_WRITE_GOLDEN") == "1"
    if not recording and not (GOLDEN / "metrics.json").is_file():
        kinds = sorted(p.name for p in GOLDEN_ROOT.iterdir() if p.is_dir())
        pytest.skip(
            f"no golden values for this CPU kind ({GOLDEN.name}; recorded: {kinds}): record "
            "them with DERMLIT_WRITE_GOLDEN=1 on a known-good commit, not the change under test"
        )
    run = tmp_path / "run"
    train_in_process(run, *OVERRIDES)
    check_against_golden("metrics.json", run / "metrics.json")
    out = tmp_path / "eval-raw"
    eval_in_process(
        f"run_dir={run}",
        "weights=raw",
        "posthoc=logit_adjust",
        f"output_dir={out}",
        "bootstrap_resamples=200",
    )
    check_against_golden("eval_raw_metrics.json", out / "metrics.json")
