"""Batched prediction over image files: decode (thread pool, the next batch while the model runs
the current one) -> the run's DeployableClassifier (eager PyTorch) or its ONNX export."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dermlit.constants import NUM_CLASSES
from dermlit.export.deployable import DeployableClassifier
from dermlit.inference.inputs import Decoded, InputImage, decode_batch

#: uint8 (N, S, S, 3) -> calibrated probabilities (N, 7) in CLASSES order
Runner = Callable[[np.ndarray], np.ndarray]


class EagerRunner:
    """The PyTorch module on ``device``, in inference mode."""

    def __init__(self, model: DeployableClassifier, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            probs, _ = self.model(torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device))
        return probs.float().cpu().numpy()


class OnnxRunner:
    """An exported file through onnxruntime (CPU)."""

    def __init__(self, classifier) -> None:
        self.classifier = classifier

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.classifier(np.ascontiguousarray(pixels))


def jpeg_bytes(pixels: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class Predictions:
    """Per input row: probabilities (NaN where unreadable), error, note, and (``--html``) the
    model input as a JPEG thumbnail (None where unreadable)."""

    probs: np.ndarray
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    thumbnails: list[bytes | None] = field(default_factory=list)


def batches(items: Sequence[InputImage], size: int) -> list[Sequence[InputImage]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def predict_images(
    items: Sequence[InputImage],
    runner: Runner,
    image_size: int,
    batch_size: int = 32,
    workers: int = 2,
    thumbnails: bool = False,
    progress: bool = True,
) -> Predictions:
    """Probabilities of every item in order; one failed image never stops the others."""
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0: {batch_size}, {workers}")
    out = Predictions(np.full((len(items), NUM_CLASSES), np.nan))
    chunks = batches(items, batch_size)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    ahead = ThreadPoolExecutor(max_workers=1)  # decodes batch k+1 while batch k runs
    bar = tqdm(total=len(items), unit="img", desc="predict", disable=not progress)
    try:
        pending = ahead.submit(decode_batch, list(chunks[0]), image_size, pool) if chunks else None
        start = 0
        for k in range(len(chunks)):
            decoded: Decoded = pending.result()
            if k + 1 < len(chunks):
                pending = ahead.submit(decode_batch, list(chunks[k + 1]), image_size, pool)
            rows = np.arange(start, start + len(decoded.ok))
            if decoded.ok.any():
                out.probs[rows[decoded.ok]] = runner(decoded.pixels)
            out.errors += decoded.errors
            out.notes += decoded.notes
            if thumbnails:
                it = iter(decoded.pixels)
                out.thumbnails += [jpeg_bytes(next(it)) if ok else None for ok in decoded.ok]
            start += len(decoded.ok)
            bar.update(len(decoded.ok))
    finally:
        bar.close()
        ahead.shutdown(cancel_futures=True)
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out
