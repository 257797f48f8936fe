"""Errors the user can fix (bad input, a refused override): the CLIs print one line, no traceback.

``dermlit-train`` and ``dermlit-eval`` are Hydra apps: an exception escaping the task function is
printed by Hydra as a traceback. :class:`dermlit.hydra_callbacks.InputErrorExit` turns an
:class:`InputError` into its message and exit status :data:`INPUT_ERROR_EXIT` (the traceback
still goes to ``RUN_DIR/error.log``), the same status ``dermlit compare`` and ``dermlit data``
return for input they cannot use. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

#: exit status of a refused input or configuration (argparse uses 2 for usage errors too)
INPUT_ERROR_EXIT = 2


class InputError(ValueError):
    """Bad input or configuration; the message names the offender and what to do."""


def exit_with(program: str, message: str) -> NoReturn:
    """Print ``program: message`` to stderr and exit with :data:`INPUT_ERROR_EXIT`."""
    print(f"{program}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(INPUT_ERROR_EXIT)
