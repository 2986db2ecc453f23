"""Real git repositories for tests: made in a temp dir, with their own identity
(set in the repository's config, never the user's)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fleetdeck.workspace.checks import git_environment


def git(repo: Path, *args: str) -> str:
    """Run git in `repo`; its stdout, stripped (raises on failure)."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=False,
        env=git_environment(),
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None, branch: str = "main") -> Path:
    """A repository at `path` with one commit on `branch` holding `files`."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    git(path, "config", "user.name", "Test")
    git(path, "config", "user.email", "test@fleetdeck.invalid")
    git(path, "config", "commit.gpgsign", "false")
    for name, text in (files or {"README": "hello\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def commit_file(repo: Path, name: str, text: str, message: str = "change") -> str:
    """Write `name` in `repo`'s checkout and commit it; the new commit id."""
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text(text)
    git(repo, "add", "--", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")
