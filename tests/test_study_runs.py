"""The study drivers' shared runner and committer (benchmarks/study_runs.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import study_runs  # noqa: E402


def test_timed_returns_the_exit_status_and_writes_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "run.log"
    cmd = [sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"]
    status, timing = study_runs.timed(tmp_path, cmd, log)
    assert status == 3
    assert log.read_text().strip() == "hello"
    assert set(timing) == {"wall_s", "user_s", "sys_s"} and timing["wall_s"] >= 0


def test_commit_takes_only_the_given_paths(tmp_path: Path, monkeypatch) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "root"], cwd=tmp_path, check=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    (tmp_path / "other.txt").write_text("not mine")
    for key in ("GIT_AUTHOR", "GIT_COMMITTER"):
        monkeypatch.setenv(f"{key}_NAME", "t")
        monkeypatch.setenv(f"{key}_EMAIL", "t@t")
    study_runs.commit(tmp_path, [tmp_path / "run"], "a run")
    shown = subprocess.run(
        ["git", "show", "--name-only", "--format=%s", "HEAD"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shown == ["a", "run", "run/metrics.json"]
    status = subprocess.run(
        ["git", "status", "--short"], cwd=tmp_path, capture_output=True, text=True
    ).stdout
    assert "?? other.txt" in status
