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
