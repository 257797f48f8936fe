"""One formatter for ``value [low, high]`` across the report, printed tables and comparisons."""

from __future__ import annotations

import math

from dermlit.evaluation.formatting import ci_label, fmt, interval_text, value_with_interval


def test_numbers_intervals_and_missing_values() -> None:
    assert fmt(0.81234) == "0.812" and fmt(0.01234, signed=True) == "+0.012"
    assert fmt(None) == fmt(math.nan) == fmt(math.inf) == "n/a"
    assert interval_text(-0.02, 0.031, signed=True) == "[-0.020, +0.031]"
    assert value_with_interval(0.5, 0.4, 0.61) == "0.500 [0.400, 0.610]"
    assert value_with_interval(0.5, None, 0.6) == "0.500"


def test_ci_label_says_why_an_interval_is_missing_or_zero_width() -> None:
    m = {"a_ci_low": 0.1, "a_ci_high": 0.2, "b_ci_biased": True, "c_ci_low": None}
    m |= {"d_ci_low": 1.0, "d_ci_high": 1.0, "d_ci_degenerate": True, "d_ci_support": 1.0}
    assert ci_label(m, "a") == "[0.100, 0.200]"
    assert ci_label(m, "b") == "no CI (biased bootstrap)"
    assert ci_label(m, "c") == ""
    assert ci_label(m, "d") == "[1.000, 1.000] zero width, 1 image"
