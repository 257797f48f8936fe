"""The study drivers' shared runner and committer (benchmarks/study_runs.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dermlit.archive import ArchiveError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import study_runs  # noqa: E402


def test_timed_returns_the_exit_status_and_writes_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "run.log"
    cmd = [sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"]
    status, timing = study_runs.timed(tmp_path, cmd, log)
    assert status == 3
    assert log.read_text().strip() == "hello"
    assert set(timing) == {"wall_s", "user_s", "sys_s"} and timing["wall_s"] >= 0


@pytest.fixture
def repo(tmp_path: Path, monkeypatch) -> Path:
    """An empty git repository with a committer identity."""
    for key in ("GIT_AUTHOR", "GIT_COMMITTER"):
        monkeypatch.setenv(f"{key}_NAME", "t")
        monkeypatch.setenv(f"{key}_EMAIL", "t@t")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "root"], cwd=tmp_path, check=True)
    return tmp_path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def test_commit_takes_only_the_given_paths(repo: Path) -> None:
    (repo / "run").mkdir()
    (repo / "run" / "metrics.json").write_text("{}")
    (repo / "other.txt").write_text("not mine")
    study_runs.commit(repo, [repo / "run"], "a run")
    shown = git(repo, "show", "--name-only", "--format=%s", "HEAD").split()
    assert shown == ["a", "run", "run/metrics.json"]
    assert "?? other.txt" in git(repo, "status", "--short")


#: a stand-in for dermlit-train: writes what an evaluated run holds into the directory it is given
FAKE_RUN = """
import pathlib, sys
out = pathlib.Path(sys.argv[1])
assert not (out / "stale.txt").exists(), "the output directory was not emptied"
(out / ".hydra").mkdir(parents=True)
(out / "metrics.json").write_text('{"test/macro_f1": 0.5}')
(out / "predictions.csv").write_text("image_id,label\\n")
(out / ".hydra" / "resolved.yaml").write_text("seed: 0\\n")
(out / "checkpoint.ckpt").write_text("large, not archived")
"""


def run_fake(repo: Path, script: str = FAKE_RUN, **kwargs) -> bool:
    out_dir = repo / "outputs" / "run"
    arguments = dict(
        out_dir=out_dir,
        dest=repo / "docs" / "results" / "run",
        log_path=repo / "outputs" / "run.log",
        record={"overrides": ["seed=0"]},
        message="Study: run ({wall_min:.1f} min wall)",
    )
    return study_runs.run_and_archive(
        repo, [sys.executable, "-c", script, str(out_dir)], **{**arguments, **kwargs}
    )


def test_run_and_archive_archives_times_and_commits_one_run(repo: Path) -> None:
    stale = repo / "outputs" / "run" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an unfinished earlier attempt")
    (repo / "index.csv").write_text("")

    def finish(dest: Path) -> list[Path]:
        (repo / "index.csv").write_text(f"{dest.name}\n")
        return [repo / "index.csv"]

    assert run_fake(repo, finish=finish)
    dest = repo / "docs" / "results" / "run"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        ".hydra/resolved.yaml",
        "metrics.json",
        "predictions.csv",
        "time.json",
    ]
    record = json.loads((dest / "time.json").read_text())
    assert record["overrides"] == ["seed=0"] and {"wall_s", "user_s", "sys_s"} <= set(record)
    subject, *files = git(repo, "show", "--name-only", "--format=%s", "HEAD").strip().split("\n")
    assert subject == f"Study: run ({record['wall_s'] / 60:.1f} min wall)"
    assert sorted(filter(None, files)) == sorted(
        ["index.csv", *(f"docs/results/run/{p}" for p in ("metrics.json", "predictions.csv"))]
        + ["docs/results/run/.hydra/resolved.yaml", "docs/results/run/time.json"]
    )
    # once archived, the run is not repeated (a resumed study skips it)
    assert run_fake(repo, script="raise SystemExit(9)")


def test_run_and_archive_names_the_log_of_a_failed_run_and_commits_nothing(
    repo: Path, capsys
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert not run_fake(repo, script="print('diverged'); raise SystemExit(2)")
    assert f"exit 2, see {repo / 'outputs' / 'run.log'}" in capsys.readouterr().out
    assert (repo / "outputs" / "run.log").read_text().strip() == "diverged"
    assert not (repo / "docs").exists() and git(repo, "rev-parse", "HEAD") == head


def test_run_and_archive_refuses_an_output_that_is_not_an_evaluated_run(repo: Path) -> None:
    with pytest.raises(ArchiveError, match="missing"):
        run_fake(repo, script="import pathlib, sys; pathlib.Path(sys.argv[1]).mkdir()")
