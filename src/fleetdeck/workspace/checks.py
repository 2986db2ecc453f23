"""`[repo]` checked against the repository itself, with the git command line.

The config's schema says what the keys hold; only git can say whether `path` is
a repository, whether `target` is one of its branches and whether the worktrees
directory sits among its tracked files (where every worktree would show up as
changes of the user's own checkout).
"""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from fleetdeck.config import Problem

if TYPE_CHECKING:
    from fleetdeck.config import Fleet


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=False,
        env=git_environment(),
    )


def git_environment() -> dict[str, str]:
    """The environment git runs in: the user's, with prompts off and plain
    English messages (fleetdeck reads some of them)."""
    import os

    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": ""})
    # A fleetdeck run inside a git hook or an agent's own worktree must not
    # follow that repository instead of the one configured.
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR"):
        env.pop(name, None)
    return env


def repo_problems(fleet: Fleet, state_dir: Path) -> list[Problem]:
    """What is wrong with `[repo]` for a run keeping its state in `state_dir`
    (nothing without a `[repo]`)."""
    repo = fleet.config.repo
    path = fleet.repo_path
    worktrees = fleet.worktrees_dir(state_dir)
    if repo is None or path is None or worktrees is None:
        return []
    problems: list[Problem] = []
    for i, name in enumerate(repo.copy):
        pure = PurePosixPath(name)
        if not name or pure.is_absolute() or ".." in pure.parts:
            problems.append(
                Problem(f"repo.copy[{i}]", f"{name!r} must be a path inside the repository")
            )
    if not path.is_dir():
        return [*problems, Problem("repo.path", f"{path} is not a directory")]
    try:
        found = _git(path, "rev-parse", "--show-toplevel")
    except OSError as exc:
        return [*problems, Problem("repo", f"cannot run git: {exc.strerror}")]
    if found.returncode != 0:
        return [*problems, Problem("repo.path", f"{path} is not a git repository with a work tree")]
    top = Path(found.stdout.strip()).resolve()
    branch = _git(path, "rev-parse", "--verify", "--quiet", f"refs/heads/{repo.target}^{{commit}}")
    if branch.returncode != 0:
        problems.append(Problem("repo.target", f"no branch '{repo.target}' in {top}"))
    if worktrees.is_relative_to(top) and worktrees != top:
        first = worktrees.relative_to(top).parts[0]
        tracked = _git(top, "ls-files", "--", first)
        if tracked.stdout.strip():
            problems.append(
                Problem(
                    "repo.worktrees",
                    f"{worktrees} is inside '{first}', which git tracks in {top}: "
                    "put the worktrees outside the tracked files",
                )
            )
    elif worktrees == top:
        problems.append(Problem("repo.worktrees", f"{worktrees} is the repository itself"))
    return problems
