"""Callbacks Lightning lacks: EMA with warmup and side-by-side validation."""

from dermlit.callbacks.ema import EMA, ema_decay

__all__ = ["EMA", "ema_decay"]
