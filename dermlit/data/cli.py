"""``dermlit data fetch|check|split|overlap``: get a dataset, check it, freeze its split,
find the images two datasets share.

``check --source NAME`` builds the source from ``conf/data/NAME.yaml`` (its ``source`` node,
with ``root`` set to DIR and ``-o key=value`` overrides), so the check sees exactly what
``dermlit-train data=NAME`` would load. ``split`` composes the whole ``data=NAME`` config
(Hydra overrides with ``-o data.split_seed=1``), so it writes exactly the split a run uses.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from rich.console import Console

DATASETS = ("ham10000",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download a dataset (Harvard Dataverse) into DIR")
    fetch.add_argument("dataset", choices=DATASETS)
    fetch.add_argument("--to", type=Path, required=True, help="destination folder")
    fetch.add_argument("--base-url", default=None, help="Dataverse server (default: Harvard)")
    fetch.add_argument("--segmentations", action="store_true", help="also the lesion masks")
    fetch.add_argument(
        "--isic2018-test",
        action="store_true",
        help="also the ISIC 2018 Task 3 test images and ground truth",
    )
    fetch.add_argument(
        "--delete-archives", action="store_true", help="remove the zips after extraction"
    )
    fetch.add_argument("--no-progress", action="store_true")

    check = sub.add_parser("check", help="validate a dataset folder and summarise it")
    check.add_argument("dir", type=Path)
    check.add_argument(
        "--source", default="ham10000", help="a conf/data option: ham10000, isic2019, csv, ..."
    )
    check.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a source setting, e.g. -o csv=labels.csv -o group_column=patient",
    )
    check.add_argument("--workers", type=int, default=2, help="decoding threads")
    check.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write near_duplicates.csv, image_faults.csv, gallery",
    )
    check.add_argument(
        "--near-threshold", type=float, default=None, help="near-duplicate NCC threshold"
    )
    check.add_argument(
        "--no-pixels", action="store_true", help="skip near-duplicates and image faults"
    )

    split = sub.add_parser("split", help="write the split a data= config uses (a frozen split)")
    split.add_argument("dir", type=Path)
    split.add_argument("--source", default="ham10000", help="a conf/data option")
    split.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override of the data config, e.g. -o data.split_seed=1",
    )
    split.add_argument("--out", type=Path, required=True, help="the splits.csv to write")

    overlap = sub.add_parser("overlap", help="exact and near-duplicate images shared by A and B")
    for name in ("a", "b"):
        overlap.add_argument(name, type=Path, help=f"dataset folder {name.upper()}")
        overlap.add_argument(
            f"--source-{name}",
            default=None,
            help="a conf/data option (default: ham10000 if it has HAM10000_metadata.csv, "
            "else folder)",
        )
    overlap.add_argument("--out", type=Path, default=None, help="CSV of the pairs")
    overlap.add_argument("--exact-only", action="store_true", help="byte-identical files only")
    overlap.add_argument("--workers", type=int, default=2)


def build_source(name: str, root: Path, options: list[str]):
    """``conf/data/NAME.yaml``'s ``source`` as ``dermlit-train data=NAME`` composes it, with
    ``root`` and the ``KEY=VALUE`` options (added when the option has no such key)."""
    from hydra.utils import instantiate

    from dermlit.config import group_options

    known = group_options("data")
    if name not in known:
        raise SystemExit(f"unknown --source {name!r}; known: {', '.join(known)}")
    cfg = compose_data(name, root, [f"++data.source.{option}" for option in options])
    return instantiate(cfg.data.source, _convert_="all")


def default_detector(threshold: float | None = None):
    """The near-duplicate detector of ``conf/data/near_duplicates/default.yaml`` (so that check
    and training share its cache), with another ``threshold`` if given."""
    from hydra.utils import instantiate

    from dermlit.config import compose_config

    overrides = ["+data/near_duplicates@detector=default"]
    if threshold is not None:
        overrides.append(f"detector.threshold={threshold}")
    return instantiate(compose_config(None, overrides).detector)


def default_cache_dir() -> Path:
    """``paths.cache_dir`` as dermlit-train resolves it (env ``DERMLIT_CACHE``)."""
    from dermlit.config import compose_config

    return Path(compose_config(None, ["+paths=default"]).paths.cache_dir)


def compose_data(name: str, root: Path, overrides: list[str]):
    """``conf/train.yaml`` composed with ``data=NAME data.source.root=ROOT`` + overrides."""
    from dermlit.config import compose_config

    return compose_config("train", [f"data={name}", f"data.source.root={root}", *overrides])


def run_split(args: argparse.Namespace, console: Console) -> int:
    from hydra.utils import instantiate

    cfg = compose_data(args.source, args.dir, args.override)
    data = instantiate(cfg.data)
    data.setup()
    table = data.splits
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    counts = table.groupby("split").agg(images=("image_id", "size"), groups=("group", "nunique"))
    console.print(counts.reindex(["train", "val", "test"]).to_string())
    console.print(f"{args.out}: {len(table)} images, split {data.split_info}")
    pairs = data.near_duplicate_pairs
    if pairs is not None and len(pairs):
        from dermlit.data.splits import crossing_pairs, grouped_stratified_split

        cross = pairs[pairs["lesion_a"] != pairs["lesion_b"]]
        index = data.index
        old = grouped_stratified_split(
            index, data.val_fraction, data.test_fraction, data.split_seed
        )
        console.print(
            f"cross-lesion near-duplicate pairs across train/val/test: {len(crossing_pairs(index, index['split'], cross))} "
            f"of {len(cross)} (a split by lesion id alone, same seed: "
            f"{len(crossing_pairs(index, old, cross))})"
        )
    return 0


def run_overlap(args: argparse.Namespace, console: Console) -> int:
    from dermlit.data.overlap import find_overlap

    frames = []
    for root, name in ((args.a, args.source_a), (args.b, args.source_b)):
        if name is None:
            name = "ham10000" if (root / "HAM10000_metadata.csv").is_file() else "folder"
        options = ["recursive=true"] if name == "folder" else []
        frames.append(build_source(name, root, options).load()[0])
    detector = None if args.exact_only else default_detector()
    found = find_overlap(frames[0], frames[1], detector, workers=args.workers)
    exact, near = int((found["match"] == "exact").sum()), int((found["match"] == "near").sum())
    console.print(
        f"A {args.a}: {len(frames[0])} images; B {args.b}: {len(frames[1])} images; "
        f"shared: {exact} exact, {near} near-duplicate pair(s)"
    )
    if len(found):
        console.print(found.head(20).to_string(index=False))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        found.to_csv(args.out, index=False)
        console.print(f"all pairs: {args.out}")
    return 0


def in_check_terms(err: Exception) -> str:
    """``err``'s message with its config keys as this command's arguments. The sources name
    the ``dermlit-train`` keys to fix (``data.source.root``, ``data.source.csv``); ``check``
    composes the same keys from ``DIR`` and ``-o KEY=VALUE``, so those are what to change."""
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    message = re.sub(r"(set )?data\.source\.root", "check DIR", message)
    return re.sub(r"data\.source\.(\w+)", r"-o \1=...", message)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    console = Console()
    if args.action == "fetch":
        from dermlit.data.fetch import DEFAULT_BASE_URL, FetchError, fetch_ham10000

        try:
            root = fetch_ham10000(
                args.to,
                base_url=args.base_url or DEFAULT_BASE_URL,
                segmentations=args.segmentations,
                isic2018_test=args.isic2018_test,
                keep_archives=not args.delete_archives,
                show_progress=not args.no_progress,
            )
        except FetchError as err:
            console.print(f"[red]fetch failed[/]: {err}")
            return 1
        console.print(f"HAM10000 ready in {root}: dermlit data check {root}")
        return 0

    from hydra.errors import HydraException

    try:
        if args.action == "split":
            return run_split(args, console)
        if args.action == "overlap":
            return run_overlap(args, console)
    except (FileNotFoundError, ValueError, KeyError, HydraException) as err:
        console.print(f"[red]{args.action} failed[/]: {err}")
        return 2

    from dermlit.data.check import check_source, print_result, write_outputs
    from dermlit.data.image_faults import FaultThresholds

    try:
        source = build_source(args.source, args.dir, args.option)
        result = check_source(
            source,
            workers=args.workers,
            detector=None if args.no_pixels else default_detector(args.near_threshold),
            cache_dir=default_cache_dir() / "near_duplicates",
            thresholds=None if args.no_pixels else FaultThresholds(),
        )
    except (FileNotFoundError, ValueError, KeyError) as err:
        console.print(f"[red]cannot read the dataset[/]: {in_check_terms(err)}")
        return 2
    print_result(result, console)
    if args.out is not None:
        for path in write_outputs(result, args.out):
            console.print(f"wrote {path}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="dermlit data")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
