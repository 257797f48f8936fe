"""From a trained run to case-by-case outputs: ``dermlit predict`` and ``dermlit export``."""
