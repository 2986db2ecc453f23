"""`fleetdeck clean`: the worktrees and branches fleetdeck left behind, removed
without losing anything.

A failed or cancelled task's worktree and its branch `fleetdeck/<task>` stay
after a run, for inspection. Cleaning removes them, but only those fleetdeck made
(the branches named in the worktrees directory's record) and only when nothing
would be lost: a worktree with uncommitted changes, or a branch holding commits
that no other ref reaches, is kept and said why. The scratch worktree of the
merge train goes too (what it holds is rebuilt from the tasks' branches), and
`git worktree prune` forgets worktrees whose directory is gone.

Plain `subprocess` (not `workspace.git`, which runs under the asyncio engine):
cleaning happens before a run or without one.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from fleetdeck.workspace.checks import git_environment

BRANCH_PREFIX = "fleetdeck/"
# The file (in the worktrees directory) naming the branches fleetdeck made
# (a dot: no task id starts with one).
OWNED_FILE = ".branches"
# The file (in the worktrees directory) naming the repository they belong to.
REPO_FILE = ".repo"
# The scratch worktree the merge train builds candidates in (a dot: no task
# id starts with one).
SCRATCH = ".train"
# Between a task and a number in what a --fresh run set aside (no task id has it).
ASIDE = "@"
# What a landing under way moves (written by the train before the target's ref
# moves, removed once every checkout of it came along).
LANDING = ".landing"


class CleanError(Exception):
    """Cleaning cannot start or go on; the message is one line."""


def owned_branches(root: Path) -> set[str]:
    """The branches fleetdeck made for the worktrees in `root`."""
    try:
        return set((root / OWNED_FILE).read_text().split())
    except FileNotFoundError:
        return set()


def record_owned(root: Path, names: Iterable[str]) -> None:
    """Write the record of the branches fleetdeck made (atomically: a supervisor
    killed while writing leaves the old record or the new one)."""
    root.mkdir(parents=True, exist_ok=True)
    record = root / OWNED_FILE
    scratch = record.with_suffix(".tmp")
    scratch.write_text("".join(f"{name}\n" for name in sorted(names)))
    scratch.replace(record)


def record_repo(root: Path, repo: Path) -> None:
    """Say which repository the worktrees in `root` belong to (for `clean`)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / REPO_FILE
    text = f"{repo}\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def recorded_repo(root: Path) -> Path | None:
    """The repository `record_repo` named for `root`, if it did."""
    try:
        text = (root / REPO_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return Path(text) if text else None


@dataclass(slots=True, frozen=True)
class Leftover:
    """One task's worktree and branch, and what cleaning does with them."""

    task: str
    branch: str
    path: Path | None  # None: the branch has no worktree any more
    # Why it is kept (None: it is removed).
    kept: str | None = None


def _git(where: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-C", str(where), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            env=git_environment(),
        )
    except OSError as exc:
        raise CleanError(f"cannot run git: {exc.strerror}") from None


def _ok(where: Path, *args: str, stdin: str | None = None) -> str:
    done = _git(where, *args, stdin=stdin)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise CleanError(f"git {' '.join(args)}: {said[0] if said else 'failed'}")
    return done.stdout


def _worktrees(repo: Path) -> dict[str, Path]:
    """The worktrees of `repo` that have a branch checked out, by branch."""
    found: dict[str, Path] = {}
    for record in _ok(repo, "worktree", "list", "--porcelain", "-z").split("\0\0"):
        path: Path | None = None
        for entry in record.split("\0"):
            key, _, value = entry.partition(" ")
            if key == "worktree":
                path = Path(value)
            elif key == "branch" and path is not None:
                found[value.removeprefix("refs/heads/")] = path
    return found


def _unreached(repo: Path, branch: str, head: str) -> int:
    """How many commits of `head` no ref but `branch` reaches."""
    refs = _ok(repo, "for-each-ref", "--format=%(refname)").split()
    others = [ref for ref in refs if ref != f"refs/heads/{branch}"]
    # `^REF` a line, not `--not`: git before 2.42 takes no options on stdin.
    stdin = "".join(f"^{ref}\n" for ref in others)
    return int(_ok(repo, "rev-list", "--count", head, "--stdin", stdin=stdin).strip() or 0)


def _why_kept(repo: Path, branch: str, path: Path | None, copied: Collection[str]) -> str | None:
    """Why the worktree at `path` (and `branch`) must stay, or None when removing
    them loses nothing."""
    head = branch
    if path is not None:
        status = _git(path, "status", "--porcelain", "-z", "--untracked-files=all")
        if status.returncode != 0:
            return "git cannot read it any more: look at it and remove it yourself"
        changed = sorted(
            {entry[3:] for entry in status.stdout.split("\0") if len(entry) > 3} - set(copied)
        )
        if changed:
            shown = ", ".join(changed[:5]) + (
                f" and {len(changed) - 5} more" if len(changed) > 5 else ""
            )
            return f"uncommitted changes to {shown}"
        head = _ok(path, "rev-parse", "HEAD").strip()
    lost = _unreached(repo, branch, head)
    if lost:
        return (
            f"{lost} commit{'s' if lost != 1 else ''} on no other branch "
            f"(`git branch -D {branch}` drops it)"
        )
    return None


def survey(
    repo: Path, root: Path, *, active: Collection[str] = (), copied: Collection[str] = ()
) -> list[Leftover]:
    """What fleetdeck left in `repo` for the worktrees in `root`: each branch it
    made, with its worktree, and why it is kept (if it is). Tasks in `active`
    are kept as a run still to be resumed needs them; `copied` are the files
    `[repo] copy` put in each worktree (not the task's changes)."""
    checked_out = _worktrees(repo)
    found: list[Leftover] = []
    for branch in sorted(owned_branches(root)):
        task = branch.removeprefix(BRANCH_PREFIX)
        path = checked_out.get(branch)
        exists = _git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")
        if path is None and exists.returncode != 0:
            found.append(Leftover(task, branch, None))  # only its record is left
            continue
        if task in active:
            kept: str | None = "its run did not finish: resume it, or run with --fresh"
        elif path is not None and not path.is_relative_to(root):
            kept = f"checked out outside {root}"
        else:
            kept = _why_kept(repo, branch, path, copied)
        found.append(Leftover(task, branch, path, kept))
    return found


def remove(repo: Path, root: Path, leftovers: Iterable[Leftover]) -> None:
    """Remove the leftovers that are not kept, the train's scratch worktree, and
    every worktree registration whose directory is gone."""
    owned = owned_branches(root)
    for leftover in leftovers:
        if leftover.kept is not None:
            continue
        if leftover.path is not None:
            _ok(repo, "worktree", "remove", "--force", str(leftover.path))
        if (
            _git(
                repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{leftover.branch}"
            ).returncode
            == 0
        ):
            _ok(repo, "branch", "-q", "-D", leftover.branch)
        owned.discard(leftover.branch)
        record_owned(root, owned)
    scratch = root / SCRATCH
    removed = scratch.exists() and (
        _git(repo, "worktree", "remove", "--force", str(scratch)).returncode == 0
    )
    if scratch.exists() and not removed:
        shutil.rmtree(scratch, ignore_errors=True)
    _ok(repo, "worktree", "prune")


def describe(leftover: Leftover, state: str | None, *, dry_run: bool) -> str:
    """One line for the operator: what is removed (or would be), or kept and why."""
    of = f"task {leftover.task}" + (f", {state}" if state else "")
    if leftover.kept is not None:
        where = leftover.path if leftover.path is not None else f"branch {leftover.branch}"
        return f"keeping {where} ({of}): {leftover.kept}"
    verb = "would remove" if dry_run else "removing"
    if leftover.path is None:
        return f"{verb} branch {leftover.branch} ({of})"
    return f"{verb} {leftover.path} and branch {leftover.branch} ({of})"


def clean(
    repo: Path,
    root: Path,
    *,
    states: dict[str, str] | None = None,
    active: Collection[str] = (),
    copied: Collection[str] = (),
    dry_run: bool = False,
    aside: bool = False,
) -> list[str]:
    """Survey and (unless `dry_run`) remove; a line per leftover for the operator.
    `states`: each task's state in the last run, to say it. `aside`: what is kept
    is set aside too (`set_aside`), for a run that starts its tasks afresh."""
    if not root.is_dir():
        return []
    leftovers = survey(repo, root, active=active, copied=copied)
    lines = [
        describe(leftover, (states or {}).get(leftover.task), dry_run=dry_run)
        for leftover in leftovers
    ]
    if not dry_run:
        remove(repo, root, leftovers)
        if aside:
            for i, leftover in enumerate(leftovers):
                if leftover.kept is not None and ASIDE not in leftover.task:
                    lines[i] += f"; set aside as {set_aside(repo, root, leftover)}"
    return lines


def set_aside(repo: Path, root: Path, leftover: Leftover) -> str:
    """Rename a kept leftover's branch (and move its worktree) to `<task>@N`, so a
    run that makes the task's worktree afresh cannot remove it; the new branch."""
    number = 1
    while (
        _git(
            repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{leftover.branch}{ASIDE}{number}"
        ).returncode
        == 0
        or (root / f"{leftover.task}{ASIDE}{number}").exists()
    ):
        number += 1
    branch = f"{leftover.branch}{ASIDE}{number}"
    owned = owned_branches(root)
    record_owned(root, owned | {branch})  # before it exists, as worktrees.py does
    _ok(repo, "branch", "-m", leftover.branch, branch)
    if leftover.path is not None:
        _ok(
            repo,
            "worktree",
            "move",
            str(leftover.path),
            str(root / f"{leftover.task}{ASIDE}{number}"),
        )
    record_owned(root, (owned | {branch}) - {leftover.branch})
    return branch
