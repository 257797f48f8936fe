"""Data: sources, validation, splits, decoded-image cache, samplers and the DataModule."""
