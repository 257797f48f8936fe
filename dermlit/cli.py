"""``dermlit``: the plain CLI for utilities (the Hydra apps are dermlit-train / dermlit-eval).

Each subcommand is a module exposing ``add_arguments(parser)`` and ``run(args) -> int``,
registered in :data:`COMMANDS` and imported only when used (torch imports are slow).
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "compare": (
        "dermlit.evaluation.compare",
        "paired bootstrap + McNemar comparison of two runs on the same test images",
    ),
    "sweep-summary": (
        "dermlit.sweep_summary",
        "one table (markdown, CSV, PNG) of a multirun's jobs: mean and 95% CI over seeds",
    ),
    "data": ("dermlit.data.cli", "get (fetch) and validate (check) datasets"),
    "archive": (
        "dermlit.archive",
        "copy a run's small artefacts (metrics, predictions, config) to commit them",
    ),
    "predict": (
        "dermlit.predict_cli",
        "a run on new images: probabilities, diagnosis, decision, referral, conformal set",
    ),
    "export": ("dermlit.export_cli", "one ONNX file of a run (preprocessing, weights, metadata)"),
    "augment-audit": (
        "dermlit.augment.audit",
        "measure how augmentation presets change lesion morphology on real images",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dermlit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        # argparse %-formats help strings: a literal "%" must be doubled
        sub.add_parser(name, help=help_text.replace("%", "%%")).set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    known, _ = parser.parse_known_args(argv[:1] or ["--help"])
    module = importlib.import_module(known._module)
    sub = argparse.ArgumentParser(prog=f"dermlit {known.command}")
    module.add_arguments(sub)
    return int(module.run(sub.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
