"""The merge train: each task's branch lands on the target, one at a time.

A merge attempt is run by `Train`, an executor in fleetdeck's own process (it
serves `TRAIN_HOST`). It builds the candidate in a scratch worktree, detached
(kept from one landing to the next and brought to each tip, removed when the
run ends): the task's branch rebased onto the target's tip (or merged into it,
or squashed onto it, as `[repo] land` says), then:

- a conflict ends the attempt with EXIT_CONFLICT, naming the files (the task's
  agent runs again at the new tip, with FLEETDECK_CONFLICT);
- a candidate whose files differ from what the task's CI tested (the target
  moved since) goes back to the task's worktree and ends the attempt with
  EXIT_RETEST: CI runs again on it, so nothing lands untested;
- otherwise the target moves to it by a compare-and-swap of the ref, never a
  force. A worktree that has the target checked out (the user's clone) is
  brought along as `git merge --ff-only` would; if one of the files landing has
  uncommitted changes there, nothing lands and the attempt ends with EXIT_WAIT,
  naming the files: the task waits in the train until they are committed or
  stashed, and lands then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from fleetdeck.executors.base import (
    AttemptProcess,
    Executor,
    HealthListener,
    LaunchError,
    LaunchRequest,
)
from fleetdeck.model import TRAIN_HOST, Attempt
from fleetdeck.stages import EXIT_CONFLICT, EXIT_RETEST, EXIT_WAIT
from fleetdeck.workspace.clean import LANDING, SCRATCH
from fleetdeck.workspace.fork import forget_fork
from fleetdeck.workspace.git import (
    GitError,
    Worktree,
    changed_files,
    git,
    rev,
    run,
    tree,
    worktrees,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fleetdeck.config import Fleet, TaskSpec
    from fleetdeck.workspace.worktrees import GitWorkspace, TaskTree


class _Refused(Exception):
    """The landing cannot go on; the message says why (one line, in the log)."""


class _Dirty(Exception):
    """The user's checkout of the target has local changes to files that would
    land: the task waits for them to be committed or stashed."""

    def __init__(self, where: Path, files: list[str]) -> None:
        super().__init__(f"target checked out with local changes to {', '.join(files)}")
        self.where = where


class _Landed(AttemptProcess):
    """A merge attempt, over by the time it is handed to the engine: a landing
    is never cut short (a ref half moved is what it must never leave)."""

    def __init__(self, code: int) -> None:
        self._code = code

    async def wait(self) -> int:
        return self._code

    async def stop(self, grace: float) -> None:
        """Nothing left to stop."""


class Train(Executor):
    """Lands tasks' branches on the target of `workspace`'s repository."""

    host = TRAIN_HOST

    def __init__(
        self, fleet: Fleet, workspace: GitWorkspace, *, reuse_scratch: bool = True
    ) -> None:
        """`reuse_scratch`: keep the scratch worktree from one landing to the next
        (False: a fresh one each time, as before; for the benchmark's side by side)."""
        self.workspace = workspace
        self.reuse_scratch = reuse_scratch
        # The scratch worktree is there, made by this train and left clean by
        # its last landing (a crash of this process, or an error, says no).
        self._scratch_ready = False
        self._tested = {task.id: task.ci is not None for task in fleet.tasks}
        self._subjects = {
            task.id: (task.prompt.strip().splitlines() or ["changes"])[0] for task in fleet.tasks
        }

    def tasks_added(self, specs: Iterable[TaskSpec]) -> None:
        """Tasks added to the running fleet (`fleetdeck add`) land too."""
        for spec in specs:
            self._tested[spec.id] = spec.ci is not None
            self._subjects[spec.id] = (spec.prompt.strip().splitlines() or ["changes"])[0]

    async def open(self, on_health: HealthListener) -> None:
        """Always up, and no host of the fleet's: nothing to report."""

    async def start(self, request: LaunchRequest) -> AttemptProcess:
        """Land `request.task`; its exit code says how it went. LaunchError, with
        the reason, when it cannot (nothing moved)."""
        lines: list[str] = []
        try:
            code = await self.land(request.task, lines)
        except (_Refused, GitError, OSError) as exc:
            lines.append(f"not landed: {exc}")
            _write_log(request.log_path, lines)
            raise LaunchError(f"not landed: {exc}") from None
        _write_log(request.log_path, lines)
        return _Landed(code)

    async def recover(self, attempt: Attempt) -> AttemptProcess | int | None:
        """A landing an earlier supervisor was killed in is finished now, from
        where the repository is: the target either moved (the task's branch is
        then in it, and landing it again changes nothing) or did not."""
        lines = ["taken up after the supervisor that started it was gone"]
        try:
            code = await self.land(attempt.task, lines)
        except (_Refused, GitError, OSError) as exc:
            lines.append(f"not landed: {exc}")
            code = 1
        _write_log(attempt.log_path, lines)
        return _Landed(code)

    async def land(self, task: str, log: list[str]) -> int:
        """Land `task`'s branch: 0 landed, EXIT_CONFLICT, EXIT_RETEST, EXIT_WAIT; `log` says what
        happened. Raises _Refused or GitError when it cannot."""
        workspace = self.workspace
        repo, target = workspace.repo, workspace.target
        async with workspace.lock:
            await self._finish_landing(log)
            branch_tree = await workspace.tree_of(task)
            tip = await rev(repo, f"refs/heads/{target}")
            if tip is None:
                raise _Refused(f"the target branch '{target}' is gone")
            head = await rev(branch_tree.path, "HEAD")
            tested = branch_tree.tested if self._tested[task] else head
            if tested is None or tested != head:
                raise _Refused(f"the branch of '{task}' moved after its CI ran")
            if branch_tree.candidate == tested and branch_tree.candidate_base == tip:
                candidate = tested  # built here last time and tested since
            else:
                built = await self._build(task, branch_tree, tip, tested)
                if isinstance(built, list):
                    branch_tree.conflict = tuple(built)
                    log.append(f"conflict with {target} at {tip[:12]} in: {', '.join(built)}")
                    return EXIT_CONFLICT
                candidate = built
                if self._tested[task] and await tree(repo, candidate) != await tree(repo, tested):
                    await git(branch_tree.path, "reset", "-q", "--hard", candidate)
                    branch_tree.candidate, branch_tree.candidate_base = candidate, tip
                    if branch_tree.fork is not None:
                        # Rebuilt on the tip: it stands on its upstream no more.
                        branch_tree.fork = None
                        await forget_fork(branch_tree.path)
                    log.append(
                        f"{target} moved to {tip[:12]} since CI ran: "
                        f"CI runs again on {candidate[:12]}"
                    )
                    return EXIT_RETEST
            try:
                await self._move_target(tip, candidate)
            except _Dirty as dirty:
                # Never the user's work touched: the task waits, its retries kept.
                branch_tree.waiting = str(dirty)
                log.append(f"{dirty} in {dirty.where}: commit or stash them there; waiting")
                return EXIT_WAIT
            branch_tree.landed = candidate
            log.append(f"landed {candidate} on {target} (was {tip})")
            return 0

    async def _build(self, task: str, branch: TaskTree, tip: str, head: str) -> str | list[str]:
        """The candidate on `tip` (its commit), or the files that conflict."""
        workspace = self.workspace
        scratch = await self._scratch_at(tip)
        kept = False
        try:
            identity = await workspace.identity(scratch)
            mode = workspace.spec.land
            abort: tuple[str, ...]
            if branch.fork is not None and mode != "merge":
                # Stacked on its upstream's branch (pipelined), which has landed
                # since (as a rebased or squashed copy, so not an ancestor of the
                # tip): only its own commits, those after the fork, go onto the
                # tip, so the upstream's change is there once. (A merge keeps
                # the upstream's commits in the target's history: git finds them.)
                await git(scratch, "checkout", "-q", "--detach", head)
                done = await run(scratch, *identity, "rebase", "-q", "--onto", tip, branch.fork)
                abort = ("rebase", "--abort")
                if done.code == 0 and mode == "squash":
                    await git(scratch, "reset", "-q", "--soft", tip)
            elif mode == "rebase":
                await git(scratch, "checkout", "-q", "--detach", head)
                done = await run(scratch, *identity, "rebase", "-q", tip)
                abort = ("rebase", "--abort")
            elif mode == "merge":
                message = f"Merge {branch.branch}\n\nFleetdeck-Task: {task}\n"
                done = await run(scratch, *identity, "merge", "-q", "--no-ff", "-m", message, head)
                abort = ("merge", "--abort")
            else:
                done = await run(scratch, *identity, "merge", "-q", "--squash", head)
                abort = ("reset", "-q", "--hard")
            if done.code != 0:
                conflicted = await git(scratch, "diff", "--name-only", "--diff-filter=U", "-z")
                files = [name for name in conflicted.split("\0") if name]
                await run(scratch, *abort)
                if not files:
                    raise GitError(f"git {mode}: {done.err.strip() or done.out.strip()}")
                kept = self.reuse_scratch
                return files
            if mode == "squash":
                message = f"{task}: {self._subjects[task]}\n\nFleetdeck-Task: {task}\n"
                await git(
                    scratch, *identity, "commit", "-q", "--no-verify", "--allow-empty", "-F", "-",
                    stdin=message,
                )  # fmt: skip
            built = await rev(scratch, "HEAD")
            assert built is not None
            kept = self.reuse_scratch
            return built
        finally:
            self._scratch_ready = kept
            if not kept:
                await _discard(workspace.repo, scratch)

    async def _scratch_at(self, tip: str) -> Path:
        """The scratch worktree, detached at `tip`, with nothing else in it.

        Kept from one landing to the next: on a large repository a fresh
        checkout of every file is most of a landing's cost, and moving the one
        there from the last tip to this one changes only what landed since.
        One this train did not leave clean (made before a restart, or left by
        an error) is made afresh."""
        workspace = self.workspace
        scratch = workspace.root / SCRATCH
        if self._scratch_ready and scratch.is_dir():
            self._scratch_ready = False
            moved = await run(scratch, "reset", "-q", "--hard", tip)
            if moved.code == 0 and (await run(scratch, "clean", "-q", "-f", "-d", "-x")).code == 0:
                return scratch
        await _discard(workspace.repo, scratch)
        await git(workspace.repo, "worktree", "add", "-q", "--detach", str(scratch), tip)
        return scratch

    async def aclose(self) -> None:
        """The run is over: the scratch worktree goes (nothing in it is anyone's)."""
        self._scratch_ready = False
        with contextlib.suppress(GitError, OSError):
            await _discard(self.workspace.repo, self.workspace.root / SCRATCH)

    async def _move_target(self, tip: str, candidate: str) -> None:
        """The target from `tip` to `candidate`, by compare-and-swap, with every
        worktree that has it checked out brought along, their changes kept."""
        repo, target = self.workspace.repo, self.workspace.target
        ref = f"refs/heads/{target}"
        if (await run(repo, "merge-base", "--is-ancestor", tip, candidate)).code != 0:
            # Never a commit of the target lost, however the candidate was built.
            raise _Refused(
                f"the candidate {candidate[:12]} does not hold {target}'s tip {tip[:12]}"
            )
        landing = {
            name
            for name in (await git(repo, "diff", "--name-only", "-z", tip, candidate)).split("\0")
            if name
        }
        checked_out = [entry for entry in await worktrees(repo) if entry.branch == ref]
        for entry in checked_out:
            theirs = sorted(landing.intersection(await changed_files(entry.path)))
            if theirs:
                raise _Dirty(entry.path, theirs)
        # Written before the ref moves, gone once every checkout came along: a
        # supervisor killed between the two leaves it, and the next one finishes.
        marker = self.workspace.root / LANDING
        marker.write_text(
            json.dumps(
                {
                    "tip": tip,
                    "candidate": candidate,
                    "checkouts": [str(e.path) for e in checked_out],
                }
            )
        )
        swapped = await run(repo, "update-ref", "-m", "fleetdeck: land", ref, candidate, tip)
        if swapped.code != 0:
            marker.unlink()
            raise _Refused(f"'{target}' moved while landing; it lands on the new tip next time")
        try:
            await self._bring_along(checked_out, tip, candidate)
        finally:
            marker.unlink()

    async def _bring_along(self, checked_out: list[Worktree], tip: str, candidate: str) -> None:
        """Every checkout of the target, from `tip` to `candidate` (or the target back)."""
        repo, target = self.workspace.repo, self.workspace.target
        ref = f"refs/heads/{target}"
        for entry in checked_out:
            # A fast-forward of that checkout: index and files from tip to
            # candidate; git refuses rather than overwrite a local change.
            done = await run(entry.path, "read-tree", "-m", "-u", tip, candidate)
            if done.code != 0:
                await run(repo, "update-ref", "-m", "fleetdeck: undo", ref, tip, candidate)
                raise _Refused(
                    f"cannot bring the checkout {entry.path} along ({done.err.strip()}); "
                    f"'{target}' left at {tip[:12]}"
                )

    async def _finish_landing(self, log: list[str]) -> None:
        """A landing whose supervisor was killed after the target moved and before
        every checkout of it came along: bring along those still at the old tip
        (their index is its tree), exactly as that landing would have."""
        marker = self.workspace.root / LANDING
        try:
            landing = json.loads(marker.read_text())
            tip, candidate, checkouts = landing["tip"], landing["candidate"], landing["checkouts"]
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError):
            marker.unlink()  # half written: the ref had not moved yet
            return
        repo, target = self.workspace.repo, self.workspace.target
        if await rev(repo, f"refs/heads/{target}") == candidate:
            old = await tree(repo, tip)
            for where in checkouts:
                index = await run(where, "write-tree")
                if index.code == 0 and index.out.strip() == old:
                    done = await run(where, "read-tree", "-m", "-u", tip, candidate)
                    log.append(
                        f"brought {where} along to {candidate[:12]} (a landing interrupted)"
                        if done.code == 0
                        else f"cannot bring {where} along to {candidate[:12]}: {done.err.strip()}"
                    )
        marker.unlink()


async def _discard(repo: Path, scratch: Path) -> None:
    """Remove the scratch worktree, if there is one."""
    if (await run(repo, "worktree", "remove", "--force", str(scratch))).code != 0:
        # Not (or no longer) a worktree of git's: only fleetdeck's own files, if any.
        await asyncio.to_thread(shutil.rmtree, scratch, True)
        await run(repo, "worktree", "prune")


def _write_log(path: str, lines: list[str]) -> None:
    # Appended, as executors append: a merge attempt run again (after a conflict's
    # fix, or CI's rerun) shares its attempt number's log, and keeps what came before.
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as log:
        log.write("".join(f"{line}\n" for line in lines))
