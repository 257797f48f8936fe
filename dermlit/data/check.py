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
"""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd
from PIL import Image
from rich.console import Console
from rich.table import Table

from dermlit.constants import CLASSES
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
        group = group.sort_values("image_id")
        ids = group["image_id"].astype(str).unique().tolist()
        if len(ids) < 2:
            continue
        groups.append(ids)
        lesions, labels = group["lesion_id"].nunique(), group["label"].nunique()
        detail = "identical to " + ", ".join(ids[1:])
        if labels > 1:
            pairs = ", ".join(f"{i}={lab}" for i, lab in zip(ids, group["label"], strict=False))
            errors.add(IDENTICAL_LABELS_DIFFER, ids[0], pairs)
        elif lesions > 1:
            where = ", ".join(
                f"{i} in {les}" for i, les in zip(ids, group["lesion_id"], strict=False)
            )
            errors.add(IDENTICAL_ACROSS_LESIONS, ids[0], where)
        else:
            warnings.add(IDENTICAL_SAME_LESION, ids[0], detail)
    return groups


def check_lesion_labels(df: pd.DataFrame, errors: ValidationReport) -> None:
    """Lesions with two known labels (an unknown label is already reported on its own)."""
    known = df[df["label"].isin(CLASSES)]
    labels = known.groupby("lesion_id")["label"].agg(lambda s: sorted(set(s)))
    for lesion, found in labels[labels.map(len) > 1].items():
        errors.add(CONFLICTING_LESION, str(lesion), "labels " + ", ".join(map(str, found)))


def check_source(source, workers: int = 4) -> CheckResult:
    """Load ``source``, run its validation, decode and hash every image, look across rows."""
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
    return CheckResult(df, errors, warnings, groups)


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
    if result.warnings.problems:
        console.print(problem_table("Warnings", result.warnings))
    if result.errors.problems:
        console.print(problem_table("Errors", result.errors))
        n = sum(map(len, result.errors.problems.values()))
        console.print(f"[red]FAILED[/]: {n} error(s); exit code 1")
    else:
        console.print("[green]OK[/]: no errors")
