"""``dermlit data check``: everything the sources' metadata checks cannot see without the pixels.

On top of :func:`dermlit.data.validation.check_index` (unknown labels, duplicate ids, missing
files) it decodes every image, hashes every file and looks across rows:

- byte-identical files under different ids. Within one lesion and with one label this is a
  **warning**: a lesion-grouped split keeps both copies on the same side (no leak) and the
  labels agree (no noise); the only cost is one image counted twice in training, and the
  official HAM10000 release has two such pairs, so refusing them would refuse the dataset.
  Across lesions it is an **error** (the copies can land in train and test: leakage), and with
  different labels it is an error (the same pixels cannot be two diagnoses).
- lesions whose images carry different labels (an error: a lesion has one diagnosis).
- near-duplicates (:mod:`dermlit.data.near_duplicates`): within a lesion expected (counted);
  across lesions with one label a **warning** (a missing lesion link: the near-duplicate-aware
  split keeps them together); with different labels an **error** (a contradiction).
- image faults (:mod:`dermlit.data.image_faults`): near-blank, blurred, dark, odd aspect
  ratio, as warnings.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image
from rich.console import Console
from rich.table import Table

from dermlit.constants import CLASSES
from dermlit.data.image_faults import FaultThresholds, image_faults
from dermlit.data.image_features import extract_features
from dermlit.data.near_duplicates import (
    CROSS_LESION,
    KINDS,
    LABELS_DIFFER,
    NearDuplicateDetector,
    clusters,
)
from dermlit.data.validation import SHOWN_IDS, ValidationReport

IDENTICAL_SAME_LESION = "byte-identical images (same lesion, same label)"
IDENTICAL_ACROSS_LESIONS = "byte-identical images across lesions"
IDENTICAL_LABELS_DIFFER = "byte-identical images with different labels"
CONFLICTING_LESION = "lesion with conflicting labels"
CORRUPT = "unreadable/corrupt image"
#: lesions with this many images or more share one row of the images-per-lesion table
MANY = 6


@dataclass
class CheckResult:
    """The index, its errors and warnings, and per-image facts (size, content hash)."""

    index: pd.DataFrame
    errors: ValidationReport
    warnings: ValidationReport
    identical_groups: list[list[str]]
    near_duplicates: pd.DataFrame | None = None
    near_clusters: list[list[str]] = field(default_factory=list)
    faults: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        return self.errors.ok


def inspect_image(path: str) -> tuple[str, str, str]:
    """``(blake2b of the bytes, "WxH", error)``; decoding fully catches truncated files."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        return "", "", f"{type(err).__name__}: {err}"
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    try:
        with Image.open(path) as img:
            img.load()
            return digest, f"{img.width}x{img.height}", ""
    except (OSError, ValueError, SyntaxError) as err:
        return digest, "", f"{type(err).__name__}: {err}"


def find_identical(df: pd.DataFrame, errors: ValidationReport, warnings: ValidationReport) -> list:
    """Group rows by file hash; classify each group of two or more ids (module docstring)."""
    groups = []
    hashed = df[df["sha"] != ""]
    for _, group in hashed.groupby("sha", sort=False):
        group = group.assign(image_id=group["image_id"].astype(str)).sort_values("image_id")
        ids = group["image_id"].unique().tolist()
        if len(ids) < 2:
            continue
        groups.append(ids)
        lesions, labels = group["lesion_id"].nunique(), group["label"].nunique()
        detail = "identical to " + ", ".join(ids[1:])
        if labels > 1:
            errors.add(IDENTICAL_LABELS_DIFFER, ids[0], _per_id(group, "label", "{}={}"))
        elif lesions > 1:
            errors.add(IDENTICAL_ACROSS_LESIONS, ids[0], _per_id(group, "lesion_id", "{} in {}"))
        else:
            warnings.add(IDENTICAL_SAME_LESION, ids[0], detail)
    return groups


def _per_id(group: pd.DataFrame, column: str, form: str) -> str:
    """``form`` filled with each id of ``group`` (sorted) and its ``column`` values (several
    joined by ``/`` when the id is listed more than once with different ones)."""
    values = group.groupby("image_id", sort=True)[column].agg(
        lambda s: "/".join(dict.fromkeys(map(str, s)))
    )
    return ", ".join(form.format(i, v) for i, v in values.items())


def check_lesion_labels(df: pd.DataFrame, errors: ValidationReport) -> None:
    """Lesions with two known labels (an unknown label is already reported on its own)."""
    known = df[df["label"].isin(CLASSES)]
    labels = known.groupby("lesion_id")["label"].agg(lambda s: sorted(set(s)))
    for lesion, found in labels[labels.map(len) > 1].items():
        errors.add(CONFLICTING_LESION, str(lesion), "labels " + ", ".join(map(str, found)))


def check_source(
    source,
    workers: int = 4,
    detector: NearDuplicateDetector | None = None,
    cache_dir: str | Path | None = None,
    thresholds: FaultThresholds | None = None,
) -> CheckResult:
    """Load ``source``, run its validation, decode and hash every image, look across rows;
    with a ``detector``, near-duplicates (cached in ``cache_dir``); with ``thresholds``, the
    image faults."""
    df, errors = source.load()
    df = df.copy()
    paths = df["path"].astype(str).tolist()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        facts = list(pool.map(inspect_image, paths))
    df["sha"] = [f[0] for f in facts]
    df["size"] = [f[1] for f in facts]
    missing = {i for i, _ in errors.problems.get("missing image file", [])}
    for image_id, (_, _, err) in zip(df["image_id"].astype(str), facts, strict=True):
        if err and image_id not in missing:
            errors.add(CORRUPT, image_id, err)
    warnings = ValidationReport(errors.dataset)
    groups = find_identical(df, errors, warnings)
    check_lesion_labels(df, errors)
    result = CheckResult(df, errors, warnings, groups)
    if detector is not None or thresholds is not None:
        check_pixels(result, detector, cache_dir, thresholds, workers)
    return result


def check_pixels(result: CheckResult, detector, cache_dir, thresholds, workers: int) -> None:
    """Near-duplicates and image faults of the decodable images, into ``result``."""
    df = result.index
    readable = df[(df["size"] != "") & ~df["image_id"].astype(str).isin(result.errors.bad_ids)]
    readable = readable.reset_index(drop=True)
    feats = extract_features(readable["path"].astype(str).tolist(), workers)
    if thresholds is not None:
        result.faults = image_faults(
            readable["image_id"].astype(str).tolist(), feats.stats, thresholds
        )
        for image_id, fault, detail in result.faults.itertuples(index=False):
            result.warnings.add(fault, image_id, detail)
    if detector is None:
        return
    pairs = detector.pairs(readable, cache_dir, feats)
    result.near_duplicates = pairs
    result.near_clusters = clusters(readable["image_id"], pairs)
    for p in pairs.itertuples(index=False):
        detail = (
            f"~ {p.image_b} (similarity {p.similarity:.2f}; lesions {p.lesion_a}/{p.lesion_b}; "
            f"labels {p.label_a}/{p.label_b})"
        )
        if p.kind == LABELS_DIFFER:
            result.errors.add("near-duplicates with different labels", p.image_a, detail)
        elif p.kind == CROSS_LESION:
            result.warnings.add("near-duplicates across lesions (same label)", p.image_a, detail)


def near_duplicate_summary(result: CheckResult) -> pd.DataFrame:
    """Pairs, images and lesions per kind of near-duplicate pair."""
    pairs = result.near_duplicates
    rows = []
    for kind in KINDS:
        sub = pairs[pairs["kind"] == kind]
        images = len(set(sub["image_a"]) | set(sub["image_b"]))
        lesions = len(set(sub["lesion_a"]) | set(sub["lesion_b"]))
        rows.append({"kind": kind, "pairs": len(sub), "images": images, "lesions": lesions})
    return pd.DataFrame(rows)


def write_outputs(result: CheckResult, out: str | Path, gallery_pairs: int = 20) -> list[Path]:
    """``near_duplicates.csv``, ``image_faults.csv`` and the gallery of the most similar
    cross-lesion pairs (``near_duplicates_cross_lesion.png``) in ``out``."""
    from dermlit.data.gallery import pair_gallery, top_cross_lesion

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if result.near_duplicates is not None:
        result.near_duplicates.to_csv(out / "near_duplicates.csv", index=False)
        written.append(out / "near_duplicates.csv")
        top = top_cross_lesion(result.near_duplicates, gallery_pairs)
        if len(top):
            paths = dict(
                zip(result.index["image_id"].astype(str), result.index["path"], strict=True)
            )
            written.append(pair_gallery(top, paths, out / "near_duplicates_cross_lesion.png"))
    if result.faults is not None:
        result.faults.to_csv(out / "image_faults.csv", index=False)
        written.append(out / "image_faults.csv")
    return written


# --------------------------------------------------------------------------- printing
def _table(title: str, *columns: str, left: tuple[int, ...] = (0,)) -> Table:
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i in left else "right")
    return table


def summaries(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The summary tables as data: per class, per official split, per lesion, image sizes."""
    by_class = df[df["label"].isin(CLASSES)].groupby("label")
    per_class = pd.DataFrame(
        {"images": by_class.size(), "lesions": by_class["lesion_id"].nunique()}
    ).reindex(list(CLASSES), fill_value=0)
    per_class.insert(1, "%", (100 * per_class["images"] / max(len(df), 1)).round(1))
    per_class = per_class.rename_axis("class").reset_index()
    unlabelled = int((df["label"] == "").sum())  # prediction-only sources
    if unlabelled:
        row = {"class": "(unlabelled)", "images": unlabelled, "%": 0.0, "lesions": 0}
        row["%"] = round(100 * unlabelled / len(df), 1)
        row["lesions"] = df.loc[df["label"] == "", "lesion_id"].nunique()
        per_class = pd.concat([per_class, pd.DataFrame([row])], ignore_index=True)
    tables = {"Images per class": per_class}
    if "split" in df.columns:
        splits = df["split"].value_counts().rename_axis("split").rename("images")
        tables["Images per split (official)"] = splits.reset_index()
    per_lesion = df.groupby("lesion_id").size().clip(upper=MANY).value_counts().sort_index()
    per_lesion.index = [f"{k}+" if k == MANY else str(k) for k in per_lesion.index]
    tables["Images per lesion"] = per_lesion.rename_axis("images").rename("lesions").reset_index()
    sizes = Counter(s for s in df["size"] if s).most_common(5)
    tables["Image sizes (WxH)"] = pd.DataFrame(sizes, columns=["size", "images"])
    return tables


def as_table(title: str, frame: pd.DataFrame) -> Table:
    table = _table(title, *map(str, frame.columns))
    for row in frame.itertuples(index=False):
        table.add_row(*map(str, row))
    return table


def problem_table(title: str, report: ValidationReport) -> Table:
    table = _table(title, "problem", "count", "ids (first 5)", left=(0, 2))
    for kind, rows in report.problems.items():
        shown = [f"{i} ({d})" if d else i for i, d in rows]
        more = ", ..." if len(shown) > SHOWN_IDS else ""
        table.add_row(kind, str(len(rows)), ", ".join(shown[:SHOWN_IDS]) + more)
    return table


def print_result(result: CheckResult, console: Console) -> None:
    df = result.index
    console.print(
        f"[bold]{result.errors.dataset}[/]: {len(df)} images, {df['lesion_id'].nunique()} "
        f"lesions, {len(result.identical_groups)} group(s) of byte-identical files"
    )
    for title, frame in summaries(df).items():
        console.print(as_table(title, frame))
    if result.near_duplicates is not None:
        sizes = Counter(len(c) for c in result.near_clusters)
        console.print(as_table("Near-duplicate pairs", near_duplicate_summary(result)))
        console.print(
            f"{len(result.near_clusters)} near-duplicate cluster(s); images per cluster: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(sizes.items()))
        )
    if result.faults is not None:
        counts = result.faults["fault"].value_counts()
        from dermlit.data.image_faults import FAULTS

        frame = pd.DataFrame({"fault": FAULTS, "images": [int(counts.get(f, 0)) for f in FAULTS]})
        console.print(as_table("Image faults", frame))
    if result.warnings.problems:
        console.print(problem_table("Warnings", result.warnings))
    if result.errors.problems:
        console.print(problem_table("Errors", result.errors))
        n = sum(map(len, result.errors.problems.values()))
        console.print(f"[red]FAILED[/]: {n} error(s); exit code 1")
    else:
        console.print("[green]OK[/]: no errors")
