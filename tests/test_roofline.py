"""benchmarks/roofline.py: its FLOP formulas against torch's own counter (FlopCounterMode)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import roofline  # noqa: E402


@pytest.mark.parametrize(
    "case",
    [
        lambda: roofline.matmul_case(64, "fp32"),
        lambda: roofline.matmul_case(32, "bf16"),
        lambda: roofline.conv_case("fp32", False, batch=2, channels=8, size=6),
        lambda: roofline.conv_case("bf16", True, batch=2, channels=8, size=6),
    ],
)
def test_case_flops_match_the_counter(case) -> None:
    c = case()
    with FlopCounterMode(display=False) as counter:
        c.run()
    assert counter.get_total_flops() == c.flops


def test_measure_interleaves_every_case_and_peaks_cover_both_dtypes() -> None:
    cases = [roofline.matmul_case(32, d) for d in roofline.DTYPES]
    samples = roofline.measure(cases, reps=3, min_time=0.001)
    assert sorted(samples) == ["matmul 32 bf16", "matmul 32 fp32"]
    assert all(len(v) == 3 and min(v) > 0 for v in samples.values())
    peaks = roofline.peaks((32,), reps=1, min_time=0.001)
    assert set(peaks) == {"fp32", "bf16"} and min(peaks.values()) > 0


def test_a_gpu_fp32_peak_is_measured_as_cudnns_fp32_convolutions_run() -> None:
    """cuDNN's fp32 convolutions use TF32 by default, matmuls do not: the fp32 peak of a GPU
    is measured with TF32 alike (the share of peak was against one ~7x lower). The CPU's is
    plain fp32, and the global flag is left as it was."""
    import torch

    before = torch.backends.cuda.matmul.allow_tf32
    assert roofline.matmul_case(8, "fp32").name == "matmul 8"
    gpu = roofline.matmul_case(8, "fp32", device="meta")  # any non-CPU device, no GPU needed
    assert gpu.name == ("matmul 8 (TF32)" if torch.backends.cudnn.allow_tf32 else "matmul 8")
    gpu.run()
    assert torch.backends.cuda.matmul.allow_tf32 == before
    assert roofline.matmul_case(8, "bf16", device="meta").name == "matmul 8"


def test_the_step_timer_times_the_first_cycle_from_the_fit_start() -> None:
    """With --warmup 0 the first cycle was timed from perf_counter() 0: ~0 images/s."""
    import time
    from types import SimpleNamespace

    import torch
    import train_throughput

    timer = train_throughput.StepTimer(warmup=0)
    trainer = SimpleNamespace(global_step=0)
    timer.on_train_start(trainer, None)
    for step in range(1, 4):
        timer.on_train_batch_start(trainer, None, None, step)
        time.sleep(0.01)
        trainer.global_step = step
        timer.on_train_batch_end(trainer, None, None, (torch.zeros(8),), step)
    assert len(timer.cycles) == 3 and max(timer.cycles) < 1.0
    assert timer.images / sum(timer.cycles) > 100  # 8 images per ~10 ms step
