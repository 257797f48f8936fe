"""One ONNX file per run: the :class:`DeployableClassifier` graph plus the run's decision data.

``torch.onnx.export`` with its default (torch.export-based, ``dynamo=True``) exporter: the
TorchScript one is deprecated and warns that it will be removed. The batch axis is dynamic;
height and width are the run's image size. Weights are stored inside the file (no external
data file), and its metadata holds every rule ``dermlit predict`` applies to the probabilities
(Bayes decision, referral, conformal set), so one file is the whole deliverable.

Metadata (``ModelProto.metadata_props``, string -> string; values are JSON): ``dermlit.*`` keys
listed in :class:`ExportMetadata`. onnxruntime reads them without the ``onnx`` package
(``session.get_modelmeta().custom_metadata_map``), so :class:`OnnxClassifier` needs only
onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from dermlit.constants import CLASSES
from dermlit.evaluation.conformal import ConformalThresholds
from dermlit.export.deployable import DeployableClassifier

#: Bumped when the meaning of the inputs, outputs or metadata changes (2: ``dermlit.referral``).
FORMAT_VERSION = 2
PREFIX = "dermlit."
INPUT_NAME = "image"
OUTPUT_NAMES = ("probs", "logits")
INPUT_DOC = (
    "uint8 RGB (N, S, S, 3): the image's shorter side resized to S (bilinear) and centre-cropped "
    "to a square, as dermlit's image cache does"
)


def config_hash(config: Mapping) -> str:
    """A short stable hash of a resolved config (``OmegaConf.to_container(cfg, resolve=True)``)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ExportMetadata:
    """What a deployment needs next to the graph, each stored as ``dermlit.<field>``.

    From the probabilities ``p`` (the graph's ``probs``, in ``classes`` order) and this alone,
    ``dermlit predict``'s columns are: ``decision`` = ``argmin_d (p @ cost_matrix)[d]``;
    ``prediction_set`` from ``conformal``; ``refer`` from ``referral``:

        {"score": "confidence" | "expected_cost", "refer_if": "<" | ">",
         "targets": [{"target": "macro_f1 >= 0.8", "threshold": 0.187 | null}, ...]}

    the score of a case is ``max_c p[c]`` (confidence) or ``min_d (p @ cost_matrix)[d]``
    (expected cost of the Bayes decision); a case is referred when ``score refer_if threshold``
    (confidence < t, expected cost > t) for any target, or when any threshold is null (the
    validation split reached that target at no coverage: every case is referred). The
    thresholds were fitted on the run's validation predictions; ``refer_reason`` joins, in
    ``targets`` order with ``"; "``, ``"confidence {v:.3f} < {t:.3f} (threshold for TARGET)"``
    or ``"expected cost {v:.3f} > {t:.3f} (threshold for TARGET)"`` per target passed, and
    ``"TARGET is not reached on validation at any coverage"`` per null threshold.
    """

    format_version: int
    classes: list[str]
    image_size: int
    input: str
    mean: list[float]
    std: list[float]
    temperature: float
    logit_bias: list[float]
    tta_views: list[str]
    cost_name: str
    cost_matrix: list[list[float]]  # [true, decided], in ``classes`` order
    conformal: dict | None  # ConformalThresholds.to_dict()
    referral: dict | None  # ReferralRule.to_dict(), see above; None: built without one
    config_hash: str

    def props(self) -> dict[str, str]:
        return {f"{PREFIX}{k}": json.dumps(v, allow_nan=False) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "the ONNX file") -> ExportMetadata:
        if f"{PREFIX}format_version" not in props:
            raise ValueError(
                f"{source} was not written by `dermlit export` (no {PREFIX}format_version "
                "metadata): export the run with `dermlit export RUN_DIR --format onnx`"
            )
        version = json.loads(props[f"{PREFIX}format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{source} has dermlit export format {version}; this dermlit reads "
                f"{FORMAT_VERSION}: re-export the run with this version"
            )
        missing = [f.name for f in fields(cls) if f"{PREFIX}{f.name}" not in props]
        if missing:
            raise ValueError(f"{source}: metadata lacks {[PREFIX + m for m in missing]}")
        return cls(**{f.name: json.loads(props[f"{PREFIX}{f.name}"]) for f in fields(cls)})

    @property
    def thresholds(self) -> ConformalThresholds | None:
        return None if self.conformal is None else ConformalThresholds.from_dict(self.conformal)

    def require_run(self, expected_hash: str, source: str = "the ONNX file") -> None:
        """Refuse a file exported from another run (or another config of the same run)."""
        if self.config_hash != expected_hash:
            raise ValueError(
                f"{source} was exported from a run with config hash {self.config_hash}, not "
                f"{expected_hash}: export this run again, or point at the run it came from"
            )


def build_metadata(
    model: DeployableClassifier,
    cost_matrix: np.ndarray,
    config_hash: str,
    conformal: ConformalThresholds | None = None,
    cost_name: str = "custom",
    referral: dict | None = None,
) -> ExportMetadata:
    """Metadata from the model itself (size, normalisation, temperature, bias, TTA) and the
    run's decision data (cost matrix ``[true, decided]`` in CLASSES order, conformal sets,
    referral rule: ``RunDecisions.referral.to_dict()``)."""
    cost = np.asarray(cost_matrix, dtype=np.float64)
    if cost.shape != (len(CLASSES), len(CLASSES)) or not np.isfinite(cost).all():
        raise ValueError(f"cost_matrix must be finite {len(CLASSES)}x{len(CLASSES)}: {cost.shape}")
    return ExportMetadata(
        format_version=FORMAT_VERSION,
        classes=list(CLASSES),
        image_size=model.image_size,
        input=INPUT_DOC,
        mean=model.mean.flatten().tolist(),
        std=model.std.flatten().tolist(),
        temperature=model.temperature,
        logit_bias=model.logit_bias.flatten().tolist(),
        tta_views=model.tta_views,
        cost_name=cost_name,
        cost_matrix=cost.tolist(),
        conformal=None if conformal is None else conformal.to_dict(),
        referral=None if referral is None else dict(referral),
        config_hash=str(config_hash),
    )


def export_onnx(
    model: DeployableClassifier,
    path: str | Path,
    metadata: ExportMetadata,
    opset_version: int | None = None,
) -> Path:
    """Write ``model`` with a dynamic batch axis and ``metadata`` to ``path`` (one file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    s = model.image_size
    example = torch.randint(0, 256, (2, s, s, 3), dtype=torch.uint8)  # 2: keeps the batch symbolic
    program = torch.onnx.export(
        model,
        (example,),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
        opset_version=opset_version,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    program.model.metadata_props.update(metadata.props())
    program.model.doc_string = f"dermlit classifier; input: {INPUT_DOC}"
    program.save(path, external_data=False)
    return path


class OnnxClassifier:
    """An exported file run by onnxruntime: ``__call__(images uint8 (N, S, S, 3)) -> probs``."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort  # the `export` extra; imported here so dermlit runs without

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ValueError(f"{self.path} is not a loadable ONNX model: {err}") from err
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = ExportMetadata.from_props(props, str(self.path))

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probs, logits)``, each (N, 7) float32, in ``metadata.classes`` order."""
        s = self.metadata.image_size
        x = np.asarray(images)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (s, s, 3):
            raise ValueError(
                f"{self.path.name} expects uint8 RGB images (N, {s}, {s}, 3), got {x.dtype} "
                f"{x.shape}"
            )
        probs, logits = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return probs, logits

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[0]


def read_metadata(path: str | Path) -> ExportMetadata:
    """The ``dermlit.*`` metadata of an exported file (with the ``onnx`` package)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return ExportMetadata.from_props(props, str(path))
