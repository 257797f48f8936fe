"""``dermlit data fetch|check``: get a dataset, and check one before training on it.

``check --source NAME`` builds the source from ``conf/data/NAME.yaml`` (its ``source`` node,
with ``root`` set to DIR and ``-o key=value`` overrides), so the check sees exactly what
``dermlit-train data=NAME`` would load.
"""

from __future__ import annotations

import argparse
import logging
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
    check.add_argument("--workers", type=int, default=4, help="decoding threads")


def build_source(name: str, root: Path, options: list[str]):
    """Instantiate ``conf/data/NAME.yaml``'s ``source`` with ``root`` and the overrides."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from dermlit.config import CONF_DIR, register_resolvers

    path = CONF_DIR / "data" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("[!_]*.yaml"))
        raise SystemExit(f"unknown --source {name!r}; known: {', '.join(known)}")
    register_resolvers()
    cfg = OmegaConf.create(
        {
            "paths": OmegaConf.load(CONF_DIR / "paths" / "default.yaml"),
            "source": OmegaConf.load(path).source,
        }
    )
    cfg.source.root = str(root)
    cfg.source = OmegaConf.merge(cfg.source, OmegaConf.from_dotlist(options))
    return instantiate(cfg.source, _convert_="all")


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

    from dermlit.data.check import check_source, print_result

    try:
        source = build_source(args.source, args.dir, args.option)
        result = check_source(source, workers=args.workers)
    except (FileNotFoundError, ValueError, KeyError) as err:
        console.print(f"[red]cannot read the dataset[/]: {err}")
        return 2
    print_result(result, console)
    return 0 if result.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="dermlit data")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
