"""The git command line, run from asyncio: small helpers, one-line errors.

Every call is `git -C DIR ...` as a subprocess of its own, in the environment of
`checks.git_environment` (no prompts, plain English). Git's own locking keeps
concurrent calls on one repository safe; what fleetdeck must serialise (a
landing) it serialises itself.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fleetdeck.executors.proctree import claim_child
from fleetdeck.workspace.checks import git_environment

_ENV = git_environment()


class GitError(Exception):
    """A git command failed; the message is one line: the command and what git said."""


@dataclass(slots=True, frozen=True)
class Done:
    """A finished git command."""

    code: int
    out: str
    err: str


async def run(where: Path | str, *args: str, stdin: str | None = None) -> Done:
    """Run `git -C where ARGS`; never raises for a failed command (see `git`)."""
    return await command(("git", "-C", str(where), *args), stdin=stdin)


async def command(
    argv: tuple[str, ...], *, cwd: Path | str | None = None, stdin: str | None = None
) -> Done:
    """Run `argv` to its end in a worker thread; its exit code and output.

    Not an asyncio subprocess: under `fleetdeck run` this process is a child
    subreaper whose local executor reaps children that are not attempts, and a
    git that ended at the wrong moment would lose its exit status to it. The
    child is claimed in the thread that starts it, before it can end."""
    return await asyncio.to_thread(_command, argv, cwd, stdin)


def _command(argv: tuple[str, ...], cwd: Path | str | None, stdin: str | None) -> Done:
    try:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_ENV,
        )
    except OSError as exc:
        raise GitError(f"cannot run {argv[0]}: {exc.strerror}") from None
    claim_child(process.pid)
    try:
        out, err = process.communicate(None if stdin is None else stdin.encode())
    finally:
        claim_child(process.pid, False)
    return Done(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def git(where: Path | str, *args: str, stdin: str | None = None) -> str:
    """Run `git -C where ARGS`; its stdout, or GitError saying what went wrong."""
    done = await run(where, *args, stdin=stdin)
    if done.code != 0:
        raise GitError(f"git {' '.join(args)}: {first_line(done.err or done.out)}")
    return done.out


def first_line(text: str) -> str:
    """The first non-empty line of git's message (`fatal: ...`)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "failed"


async def rev(where: Path | str, name: str) -> str | None:
    """The commit `name` points at, or None when there is no such thing."""
    done = await run(where, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    return done.out.strip() if done.code == 0 else None


async def tree(where: Path | str, commit: str) -> str:
    """The tree of `commit`."""
    return (await git(where, "rev-parse", f"{commit}^{{tree}}")).strip()


@dataclass(slots=True, frozen=True)
class Worktree:
    """One entry of `git worktree list`."""

    path: Path
    head: str | None
    branch: str | None  # refs/heads/NAME, None when detached


async def worktrees(repo: Path | str) -> list[Worktree]:
    """Every worktree of `repo`, the main one first."""
    out = await git(repo, "worktree", "list", "--porcelain", "-z")
    found: list[Worktree] = []
    for record in out.split("\0\0"):
        fields = [field for field in record.split("\0") if field]
        if not fields:
            continue
        path = head = branch = None
        for entry in fields:
            key, _, value = entry.partition(" ")
            if key == "worktree":
                path = Path(value)
            elif key == "HEAD":
                head = value
            elif key == "branch":
                branch = value
        if path is not None:
            found.append(Worktree(path, head, branch))
    return found


async def changed_files(where: Path | str) -> list[str]:
    """Paths with uncommitted changes in a work tree, untracked ones included."""
    out = await git(where, "status", "--porcelain", "-z", "--untracked-files=all")
    paths: list[str] = []
    entries = iter(out.split("\0"))
    for entry in entries:
        if not entry:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":
            # A rename or copy: the next entry is where it came from.
            paths.append(next(entries, ""))
    return [path for path in paths if path]


@dataclass(slots=True, frozen=True)
class DiffStat:
    """What a change touched: files, lines added, lines removed."""

    files: int
    insertions: int
    deletions: int
    paths: tuple[str, ...] = ()  # every path touched (both sides of a rename), sorted


async def diff_stat(where: Path | str, base: str, head: str) -> DiffStat:
    """The diff stat from `base` to `head` (binary files count as files only)."""
    out = await git(where, "diff", "--numstat", "-z", base, head)
    files = insertions = deletions = 0
    paths: set[str] = set()
    entries = iter(out.split("\0"))
    for entry in entries:
        parts = entry.split("\t")
        if len(parts) < 3:
            continue
        files += 1
        insertions += int(parts[0]) if parts[0].isdigit() else 0
        deletions += int(parts[1]) if parts[1].isdigit() else 0
        if parts[2]:
            paths.add(parts[2])
        else:  # a rename: where it came from and where it went follow
            paths.update(path for path in (next(entries, ""), next(entries, "")) if path)
    return DiffStat(files, insertions, deletions, tuple(sorted(paths)))


async def diff_text(where: Path | str, base: str, head: str) -> str:
    """The patch from `base` to `head`, uncoloured (views colour it themselves)."""
    return await git(where, "diff", "--no-color", "--no-ext-diff", base, head)
