"""Is an output directory writable? Asked before anything else runs.

Hydra creates the run (or sweep) directory in ``run_job`` with a bare ``mkdir``: a directory
under a read-only or non-creatable parent ends ``dermlit-train`` in a ``FileExistsError`` /
``PermissionError`` traceback from inside Hydra. :class:`dermlit.hydra_callbacks.OutputDirCheck`
asks :func:`output_dir_problem` in ``on_run_start`` / ``on_multirun_start``, i.e. before the
directory is made, any data is loaded or any step is trained, and prints one line instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the one a ``mkdir -p`` would write in)."""
    while path != path.parent:
        try:
            if path.exists():
                return path
        except OSError:  # the parent cannot be searched (no x permission): go up
            pass
        path = path.parent
    return path


def output_dir_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be created and written, or None when it can.

    Probes by creating (and removing) a temporary directory in the nearest existing ancestor,
    so that nothing is left behind and permissions, read-only mounts and root's rights are all
    what the OS says, not what the mode bits suggest.
    """
    target = Path(path).expanduser().absolute()
    existing = nearest_existing(target)
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dermlit-write-probe-", dir=existing))
    except OSError as err:
        return f"{existing} is not writable ({err.strerror})"
    return None
