"""Errors the user can fix (bad input, a refused override): the CLIs print one line, no traceback.

``dermlit-train`` and ``dermlit-eval`` are Hydra apps: an exception escaping the task function is
printed by Hydra as a traceback. :class:`dermlit.hydra_callbacks.InputErrorExit` turns an
:class:`InputError` into its message and exit status :data:`INPUT_ERROR_EXIT` (the traceback
still goes to ``RUN_DIR/error.log``), the same status ``dermlit compare`` and ``dermlit data``
return for input they cannot use. A :class:`RunFailure` (training cannot go on, e.g. a
non-finite update) is printed the same way with exit status 1: its message already names the
batch and step, and the traceback would only push that line up the screen. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

#: exit status of a refused input or configuration (argparse uses 2 for usage errors too)
INPUT_ERROR_EXIT = 2
#: exit status of a run that failed (dermlit.exit_codes.EXIT_FAILED)
RUN_FAILURE_EXIT = 1


class InputError(ValueError):
    """Bad input or configuration; the message names the offender and what to do."""


class RunFailure(Exception):
    """Mixin: a run that cannot go on, whose message says where and what to do (exit 1)."""


def exit_with(program: str, message: str, status: int = INPUT_ERROR_EXIT) -> NoReturn:
    """Print ``program: message`` to stderr and exit with ``status``."""
    print(f"{program}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


class DataNotFound(InputError, FileNotFoundError):
    """A dataset's metadata, CSV or image folder is not where the config says: refused in one
    line like any InputError, and still a FileNotFoundError for the callers that catch one."""
