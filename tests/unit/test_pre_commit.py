"""The committed tree passes its own pre-commit hooks (.pre-commit-config.yaml), on a fresh
clone: what a contributor's first `pre-commit run --all-files` sees."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from serve.config import ROOT

VENV = Path(sys.executable).parent.parent


@pytest.mark.slow  # lints and type-checks the whole tree: about a minute
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_pre_commit_passes_on_a_clean_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # The hooks run the tools of the checkout's .venv, as `make venv` leaves it.
    (clone / ".venv").symlink_to(VENV, target_is_directory=True)
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache"), "SKIP": ""}
    done = subprocess.run(
        [str(VENV / "bin" / "pre-commit"), "run", "--all-files", "--show-diff-on-failure"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for hook in ("ruff lint", "ruff format", "mypy", "end in one newline", "no .mar"):
        assert hook in done.stdout, f"hook {hook!r} did not run"


def test_the_guard_refuses_an_archive_and_a_dataset(tmp_path):
    """The large-file guard fails on a .mar, a .pt and a data/ file, and passes a source file."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # pre-commit needs a repo
    for name, refused in (("m.mar", True), ("w.pt", True), ("data/x.csv", True), ("a.py", False)):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")
        done = subprocess.run(
            [str(VENV / "bin" / "pre-commit"), "run", "no-models-or-data", "--files", name,
             "--config", str(ROOT / ".pre-commit-config.yaml")],
            cwd=tmp_path,
            env={**os.environ, "PRE_COMMIT_HOME": str(tmp_path / ".cache")},
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert (done.returncode != 0) is refused, (name, done.stdout)
