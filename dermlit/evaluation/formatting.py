"""How numbers and their intervals are written in the report, the printed tables and the
comparisons: ``value [low, high]``, one formatter for all of them."""

from __future__ import annotations

import math
from collections.abc import Mapping

#: decimals of every metric and interval bound shown to people (metrics.json keeps all)
DIGITS = 3


def is_number(value: object) -> bool:
    """A finite int or float (not a bool, not a text key like ``_ci_method``)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: float | None, digits: int = DIGITS, signed: bool = False) -> str:
    """``0.812``; ``+0.012`` when ``signed``; ``n/a`` for None, NaN or infinity."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def interval_text(
    low: float | None, high: float | None, digits: int = DIGITS, signed: bool = False
) -> str:
    """``[low, high]``."""
    return f"[{fmt(low, digits, signed)}, {fmt(high, digits, signed)}]"


def value_with_interval(
    value: float | None, low: float | None, high: float | None, digits: int = DIGITS
) -> str:
    """``value [low, high]``, or the value alone where there is no interval."""
    if low is None or high is None or not (is_number(low) and is_number(high)):
        return fmt(value, digits)
    return f"{fmt(value, digits)} {interval_text(low, high, digits)}"


def ci_label(metrics: Mapping[str, object], key: str) -> str:
    """An interval of ``metrics.json`` as the report and the printed table show it
    (``bootstrap.py`` keys): ``[low, high]``; ``no CI (biased bootstrap)`` where the interval is
    omitted; ``zero width, N image(s)`` added to a degenerate one; empty where there is none
    (undefined)."""
    if metrics.get(f"{key}_ci_biased"):
        return "no CI (biased bootstrap)"
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if not (is_number(low) and is_number(high)):
        return ""
    text = interval_text(low, high)
    if metrics.get(f"{key}_ci_degenerate"):
        n = metrics.get(f"{key}_ci_support")
        text += (
            f" zero width, {int(n)} image{'s' if n != 1 else ''}" if is_number(n) else " zero width"
        )
    return text
