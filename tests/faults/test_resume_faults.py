"""Fault 3: every spelling of ``resume=RUN_DIR`` continues the run from its newest checkpoint
with its stored overrides, or is refused with a message naming the directory (exit status 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dermlit.resume import ResumeError, expand_resume_argv

from .conftest import dermlit

STORED = ["loss=focal", "trainer.max_epochs=5", "ckpt_path=/old.ckpt"]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "a"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(STORED))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"logger": {"csv": {}}}))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    return run


def expected(run: Path, *extra: str) -> list[str]:
    run = run.resolve()
    return [
        "dermlit-train",
        "loss=focal",
        *extra,
        *([] if extra else ["trainer.max_epochs=5"]),
        f"hydra.run.dir={run}",
        f"resume={run}",
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
    ]


def test_resume_with_the_same_hydra_run_dir_resumes(run: Path) -> None:
    """Was: taken for an already expanded command, i.e. trained from scratch into DIR."""
    argv = expand_resume_argv(["dermlit-train", f"resume={run}", f"hydra.run.dir={run}"])
    assert argv == expected(run)


@pytest.mark.parametrize(
    "spelling",
    [
        "resume={run}",
        "+resume={run}",
        "++resume={run}",
        "resume={run}/",
        "resume=runs/a",
        "resume=runs/a/ hydra.run.dir={run}/",
        "++resume=runs/./a +hydra.run.dir=runs/a",
    ],
)
def test_every_spelling_means_the_same(run: Path, monkeypatch, spelling: str) -> None:
    monkeypatch.chdir(run.parent.parent)
    args = spelling.format(run=run).split()
    assert expand_resume_argv(["dermlit-train", *args, "trainer.max_epochs=9"]) == expected(
        run, "trainer.max_epochs=9"
    )


def test_expansion_is_idempotent_so_a_ddp_child_gets_rank_zeros_config(run: Path) -> None:
    parent = expand_resume_argv(["dermlit-train", f"resume={run}", "trainer.max_epochs=9"])
    assert expand_resume_argv(parent) == parent
    # what dermlit.distributed.hydra_job_command builds: rank 0's task overrides (which Hydra has
    # stored in overrides.yaml by then) + the run dir + the child's job name and no output subdir
    task = [a for a in parent[1:] if not a.startswith("hydra.")]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(task))
    child = ["dermlit-train", *task, f"hydra.run.dir={run}", "hydra.job.name=ddp_rank_1"]
    child.append("hydra.output_subdir=null")
    expanded = expand_resume_argv(child)
    assert sorted(expanded[1:]) == sorted(
        [*parent[1:], "hydra.job.name=ddp_rank_1", "hydra.output_subdir=null"]
    )


def test_refusals_name_the_directory_and_what_to_do(run: Path, tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "nope"): "no such directory",
        str(run / "checkpoints" / "last.ckpt"): "is a file, not a run directory",
        str(tmp_path / "empty"): "expected a dermlit-train run directory",
    }
    (tmp_path / "empty").mkdir()
    for value, message in cases.items():
        with pytest.raises(ResumeError, match=message) as err:
            expand_resume_argv(["x", f"resume={value}"])
        assert value in str(err.value) or str(Path(value).resolve()) in str(err.value)
    # a multirun root: name its jobs and how to resume one
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text("[]")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    with pytest.raises(ResumeError, match=rf"multirun directory \(jobs: 0, 1\).*resume={sweep}/0"):
        expand_resume_argv(["x", f"resume={sweep}"])
    with pytest.raises(ResumeError, match="drop hydra.run.dir"):
        expand_resume_argv(["x", f"resume={run}", f"hydra.run.dir={tmp_path / 'other'}"])
    (run / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(ResumeError, match="no checkpoint to resume from"):
        expand_resume_argv(["x", f"+resume={run}", f"hydra.run.dir={run}"])


def test_entry_point_refuses_in_one_line_with_exit_status_2(tmp_path: Path) -> None:
    proc = dermlit("train", f"resume={tmp_path / 'missing'}", cache=tmp_path / "cache")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"dermlit-train: resume={tmp_path / 'missing'}: no such directory {tmp_path / 'missing'}"
    ]
    assert not (tmp_path / "missing").exists()  # nothing created
