"""DDP under Hydra, for single runs AND multiruns.

Lightning's DDP launcher starts ranks 1..N-1 by re-running the command line. Under Hydra it
appends ``hydra.run.dir=...`` to ``sys.argv``, which for a multirun job still holds ``-m`` and
the whole sweep, so every child re-launches the sweep (docs/design.md, "DDP and Hydra"; Lightning PR #11617 was
reverted). :class:`HydraDDPStrategy` starts each child as a plain (non-multirun) run of THIS job:
the job's own overrides (``hydra.overrides.task``) and its output directory.

This relies on Lightning's PRIVATE launcher API (pyproject.toml bounds ``lightning`` for it):
``_SubprocessScriptLauncher`` and the module-level ``_hydra_subprocess_cmd(local_rank)`` that its
``_call_children_scripts`` looks up when it starts the children. If a Lightning release renames
or stops calling it, patching would silently do nothing and every rank would re-launch the whole
sweep; :func:`private_api_problems` detects that and :class:`HydraDDPStrategy` refuses to start.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from unittest import mock

import lightning
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch.utils.data import Dataset

from dermlit.errors import InputError

#: pyproject.toml's bound, for the message (tests/faults checks that the two agree)
LIGHTNING_REQUIREMENT = "lightning>=2.5,<2.7"


def hydra_job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command that re-creates the current Hydra job (not the sweep) for one child rank."""
    from hydra.core.hydra_config import HydraConfig

    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is not None:
        command = [sys.executable, "-m", __main__.__spec__.name]
    else:  # a console script such as dermlit-train
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    command += [str(o) for o in hydra_cfg.overrides.task]
    command += [
        f"hydra.run.dir={hydra_cfg.runtime.output_dir}",
        f"hydra.job.name=ddp_rank_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, os.getcwd()


class LightningPrivateAPIError(InputError):
    """The installed Lightning lacks the private launcher API :class:`HydraJobLauncher` patches."""


def private_api_problems() -> list[str]:
    """What :class:`HydraJobLauncher` needs from Lightning and does not find (empty: all there)."""
    where = "lightning.pytorch.strategies.launchers.subprocess_script"
    problems = []
    command = getattr(subprocess_script, "_hydra_subprocess_cmd", None)
    if command is None:
        problems.append(f"{where}._hydra_subprocess_cmd is gone")
    elif list(inspect.signature(command).parameters) != ["local_rank"]:
        problems.append(f"{where}._hydra_subprocess_cmd{inspect.signature(command)} changed")
    children = getattr(_SubprocessScriptLauncher, "_call_children_scripts", None)
    if children is None:
        problems.append(f"{where}._SubprocessScriptLauncher._call_children_scripts is gone")
    elif "_hydra_subprocess_cmd" not in children.__code__.co_names:
        problems.append(
            f"{where}._SubprocessScriptLauncher._call_children_scripts no longer calls the "
            "module's _hydra_subprocess_cmd"
        )
    params = list(inspect.signature(_SubprocessScriptLauncher.__init__).parameters)
    if params != ["self", "cluster_environment", "num_processes", "num_nodes"]:
        problems.append(f"{where}._SubprocessScriptLauncher.__init__ takes {params[1:]}")
    return problems


class HydraJobLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher with children built by :func:`hydra_job_command`."""

    def _call_children_scripts(self) -> None:
        with mock.patch.object(subprocess_script, "_hydra_subprocess_cmd", hydra_job_command):
            super()._call_children_scripts()


class HydraDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose script launcher keeps every Hydra multirun job in its own job."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        popen = getattr(self, "_start_method", "popen") == "popen"
        if not popen and type(self._launcher) is not _SubprocessScriptLauncher:
            return  # spawn/fork: children do not re-run the command line
        problems = private_api_problems()
        if type(self._launcher) is not _SubprocessScriptLauncher:
            problems.append(
                f"DDPStrategy now launches popen children with {type(self._launcher).__name__}"
            )
        if problems:
            raise LightningPrivateAPIError(
                f"dermlit's HydraDDPStrategy cannot keep DDP ranks inside their Hydra job with "
                f"lightning {lightning.__version__}: {'; '.join(problems)}. Without it every rank "
                "would re-launch the whole sweep. Install the Lightning that pyproject.toml "
                f"allows ({LIGHTNING_REQUIREMENT!r}), or update dermlit/distributed.py."
            )
        self._launcher = HydraJobLauncher(
            self.cluster_environment, self.num_processes, self.num_nodes
        )


#: variables Lightning's launcher sets in the launching process for its children
LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextmanager
def distributed_job() -> Iterator[None]:
    """One Hydra job's distributed lifetime. A multirun runs its jobs one after another in the
    same process: without this, the next job would reuse the finished job's process group (whose
    peers have exited) and, seeing ``LOCAL_RANK`` set, would not launch its own ranks."""
    saved = {key: os.environ.get(key) for key in LAUNCH_ENV}
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def evaluation_sampler(dataset: Dataset, num_replicas: int, rank: int):
    """Each evaluation sample on exactly one rank: rank r gets positions r, r+W, r+2W, ...

    ``DistributedSampler`` pads the last shard with duplicates, which biases validation/test
    metrics; ``None`` (a plain sequential loader) on a single process.
    """
    if num_replicas <= 1:
        return None
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=num_replicas, rank=rank, shuffle=False
    )


def gather_in_dataset_order(values: torch.Tensor, world_size: int) -> torch.Tensor:
    """Reassemble per-rank evaluation shards (from :func:`evaluation_sampler`) in dataset order;
    every rank gets the whole tensor. Shards may differ in length by one, so the gather goes
    through ``all_gather_object`` rather than the equal-shape ``all_gather``."""
    if world_size <= 1 or not dist.is_available() or not dist.is_initialized():
        return values
    shards: list[torch.Tensor | None] = [None] * world_size
    dist.all_gather_object(shards, values.detach().cpu())
    total = sum(len(s) for s in shards)
    out = torch.empty((total, *values.shape[1:]), dtype=values.dtype)
    for rank, shard in enumerate(shards):
        out[rank::world_size] = shard
    return out
