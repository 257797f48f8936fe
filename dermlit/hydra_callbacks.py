"""Hydra callbacks (conf/hydra/default.yaml ``hydra.callbacks``).

Hydra's basic launcher keeps a failed job's exception in memory and raises it only after the
whole batch of jobs has run, and it writes it nowhere in the job's directory. A sweep of 30 jobs
then leaves a directory without metrics.json and no trace of why; this writes the traceback next
to the job's other files, where ``dermlit sweep-summary`` lists it.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: the file a failed job's traceback goes to, in its output directory
ERROR_FILE = "error.log"


class JobErrorFile(Callback):
    """Write RUN_DIR/error.log when a job raises; remove a stale one when a rerun succeeds."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        path = Path(config.hydra.runtime.output_dir) / ERROR_FILE
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # the property would re-raise it
            text = "".join(traceback.format_exception(error))
            path.write_text(f"overrides: {list(job_return.overrides or [])}\n{text}")
        elif job_return.status == JobStatus.COMPLETED:
            path.unlink(missing_ok=True)
