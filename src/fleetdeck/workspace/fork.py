"""Where a stacked worktree's own change starts: the upstream commit it was made on.

Under the pipelined policy a dependent's worktree is made on its upstream's
unlanded branch (workspace.worktrees); the commit it started from is kept in the
worktree's own git directory, so it goes when the worktree goes, and a
restarted supervisor (and the train) finds it again.
"""

from __future__ import annotations

from pathlib import Path

from fleetdeck.workspace.git import git, run

# In a stacked worktree's own git directory: the upstream commit it started from.
FORK_FILE = "fleetdeck-fork"


async def write_fork(path: Path, fork: str) -> None:
    """Keep, with the worktree at `path`, the upstream commit it started from."""
    where = (await git(path, "rev-parse", "--git-path", FORK_FILE)).strip()
    (path / where).write_text(fork + "\n")


async def read_fork(path: Path) -> str | None:
    """The upstream commit a stacked worktree started from (None: not stacked)."""
    where = await run(path, "rev-parse", "--git-path", FORK_FILE)
    if where.code != 0:
        return None
    try:
        return (path / where.out.strip()).read_text().strip() or None
    except OSError:
        return None


async def forget_fork(path: Path) -> None:
    """The worktree no longer stands on its upstream's branch (rebuilt on the tip)."""
    where = await run(path, "rev-parse", "--git-path", FORK_FILE)
    if where.code == 0:
        (path / where.out.strip()).unlink(missing_ok=True)
