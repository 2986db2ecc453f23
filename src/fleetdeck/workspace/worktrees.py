"""A git worktree per task: the engine's `Workspace` for a fleet with a `[repo]`.

Before a task's first agent attempt it gets a worktree of its own on the branch
`fleetdeck/<task>`, made from the target's tip (which holds every dependency
that landed); each retry starts again from a fresh worktree at the tip then,
unless the task keeps its worktree. Its CI runs in the same worktree, on the
commit its agent left. After a successful agent attempt whatever the agent left
uncommitted is committed (`after_attempt`), and a landed task's worktree and
branch are removed once it has ended (a failed one's stay, for inspection).

Fleetdeck only ever deletes or recreates branches it made itself: it keeps
their names in a file of the worktrees directory, and refuses a task whose
branch exists without being in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetdeck.engine.workspace import Place
from fleetdeck.executors.base import LaunchError
from fleetdeck.model import Attempt, Stage, TaskState
from fleetdeck.workspace.clean import BRANCH_PREFIX, owned_branches, record_owned, record_repo
from fleetdeck.workspace.fork import read_fork, write_fork
from fleetdeck.workspace.git import (
    GitError,
    command,
    diff_stat,
    diff_text,
    first_line,
    git,
    rev,
    run,
    worktrees,
)
from fleetdeck.workspace.remote import bring_back, place_remote, remote_repos

if TYPE_CHECKING:
    from fleetdeck.config import Fleet, RepoSpec, TaskSpec

# The paths of a change journaled with its attempt, at most (for the overlap
# warning; a change of more files is past warning about).
PATHS_KEPT = 1000
# Who commits for fleetdeck when the repository has no identity configured.
FALLBACK_IDENTITY = ("-c", "user.name=fleetdeck", "-c", "user.email=fleetdeck@localhost")


class WorkspaceError(LaunchError):
    """A task's worktree cannot be made or its work cannot be committed; the
    message says why, in one line (it becomes the attempt's error)."""


@dataclass(slots=True)
class TaskTree:
    """What fleetdeck knows of one task's worktree."""

    path: Path
    branch: str
    # The target's tip the worktree was made from (FLEETDECK_BASE).
    base: str
    # The commit its last CI attempt started on (what the train may land).
    tested: str | None = None
    # The candidate the train rebuilt on a newer tip and sent back to CI, and
    # the tip it was built on.
    candidate: str | None = None
    candidate_base: str | None = None
    # Files that conflicted when it last tried to land (FLEETDECK_CONFLICT).
    conflict: tuple[str, ...] = ()
    # The commit that landed it on the target.
    landed: str | None = None
    # Why its last merge attempt waits instead of landing (the attention queue's words).
    waiting: str | None = None
    # What its agent stage committed (files, insertions, deletions, commit).
    diff: dict[str, Any] = field(default_factory=dict)
    # The SSH host whose clone holds its worktree too, and that worktree's path
    # there (workspace.remote).
    host: str | None = None
    remote_path: str | None = None
    # Made on an unlanded upstream's branch (pipelined): that upstream's task,
    # and the commit of its branch it started from (its own change is what
    # follows it; None once the train rebuilt it on the target's tip).
    upstream: str | None = None
    fork: str | None = None


class GitWorkspace:
    """Worktrees of one repository, one per task (engine.workspace.Workspace)."""

    def __init__(
        self, fleet: Fleet, state_dir: Path, hosts: Mapping[str, object] | None = None
    ) -> None:
        """`hosts`: the run's executors, for the SSH hosts whose table names a
        clone of the repository (`repo`): their tasks' worktrees are made there."""
        repo = fleet.config.repo
        path = fleet.repo_path
        root = fleet.worktrees_dir(state_dir)
        assert repo is not None and path is not None and root is not None
        self.spec: RepoSpec = repo
        self.repo = path
        self.root = root
        self.target = repo.target
        self.tasks: dict[str, TaskTree] = {}
        self._specs: dict[str, TaskSpec] = {task.id: task for task in fleet.tasks}
        # Worktrees and branches are made and removed one at a time: git locks
        # shared files (packed-refs, the worktrees' admin directory) and a second
        # command at the same moment fails instead of waiting.
        self.lock = asyncio.Lock()
        self._identity: tuple[str, ...] | None = None
        self.remotes = remote_repos(fleet, hosts or {}, path, root)
        # The upstream each task's next agent attempt starts on (stack_on).
        self._stacks: dict[str, str | None] = {}

    def tasks_added(self, specs: Iterable[TaskSpec]) -> None:
        """Tasks added to the running fleet (`fleetdeck add`) get worktrees too."""
        self._specs.update((spec.id, spec) for spec in specs)

    # --- the Workspace hook ---------------------------------------------------------

    async def prepare(self, task: str, attempt: Attempt) -> Place:
        """The task's worktree for `attempt`: a fresh one for an agent attempt
        (the same one again with `keep_worktree`), the agent's for later stages."""
        tree = self.tasks.get(task)
        if attempt.stage is Stage.AGENT:
            keep = self._specs[task].keep_worktree
            host = attempt.host if attempt.host in self.remotes else None
            upstream = self._stacks.pop(task, None)
            # A stacked worktree is never kept: what it stood on is void or landed.
            stacked = upstream is not None or (tree is not None and tree.fork is not None)
            if tree is None or not keep or stacked or not tree.path.is_dir() or tree.host != host:
                async with self.lock:
                    tree = await self._fresh(task, tree, upstream)
        else:
            if tree is None:
                tree = await self._adopt(task)
            tree.tested = await rev(tree.path, "HEAD")
        where = str(tree.path)
        remote = self.remotes.get(attempt.host)
        if remote is not None:
            where = await place_remote(remote, task, tree, agent=attempt.stage is Stage.AGENT)
        env = {
            "FLEETDECK_WORKTREE": where,
            "FLEETDECK_BRANCH": tree.branch,
            "FLEETDECK_BASE": tree.base,
        }
        if attempt.stage is Stage.AGENT and tree.conflict:
            env["FLEETDECK_CONFLICT"] = "\n".join(tree.conflict)
        return Place(cwd=where, env=env)

    async def after_attempt(self, task: str, attempt: Attempt) -> dict[str, Any]:
        """After a successful agent attempt: commit what it left, and say what its
        change is (files, insertions, deletions, commit). WorkspaceError when it
        changed nothing and `[repo] empty = "fail"`."""
        tree = self.tasks.get(task)
        if attempt.stage is Stage.MERGE and tree is not None:
            if tree.waiting is not None:
                reason, tree.waiting = tree.waiting, None
                return {"reason": reason}
            return {} if tree.landed is None else {"landed": tree.landed}
        if attempt.stage is not Stage.AGENT:
            return {}
        remote = self.remotes.get(attempt.host)
        if tree is None:
            # Started by a supervisor that is gone, taken up and ended under this one.
            tree = await self._adopt(task)
            if remote is not None:
                tree.host, tree.remote_path = remote.host, await remote.where(task)
        where = tree.path
        if remote is not None and tree.host == attempt.host:
            message = (
                f"{task}: {commit_subject(self._specs[task].prompt)}\n\nFleetdeck-Task: {task}\n"
            )
            try:
                await bring_back(remote, task, tree, message)
            except GitError as exc:
                raise WorkspaceError(f"cannot bring the agent's work back: {exc}") from None
        try:
            await git(where, "add", "-A")
            if self.spec.copy:
                # Copied in for the agent (`.env`), never part of its change.
                await run(where, "reset", "-q", "--", *self.spec.copy)
            staged = await run(where, "diff", "--cached", "--quiet")
            if staged.code == 1:
                subject = f"{task}: {commit_subject(self._specs[task].prompt)}"
                message = f"{subject}\n\nFleetdeck-Task: {task}\n"
                identity = await self._commit_identity(where)
                await git(
                    where,
                    *identity,
                    "-c",
                    "commit.gpgsign=false",
                    "commit",
                    "-q",
                    "--no-verify",
                    "-F",
                    "-",
                    stdin=message,
                )
            head = await rev(where, "HEAD")
            assert head is not None
            stat = await diff_stat(where, tree.base, head)
        except GitError as exc:
            raise WorkspaceError(f"cannot commit the agent's work in {where}: {exc}") from None
        if head == tree.base and self.spec.empty == "fail":
            raise WorkspaceError(
                'the agent changed nothing in its worktree ([repo] empty = "fail")'
            )
        tree.conflict = ()
        tree.candidate = None
        tree.diff = {
            "files": stat.files,
            "insertions": stat.insertions,
            "deletions": stat.deletions,
            "commit": head,
            # For the views: the detail screen and the overlap warning.
            "branch": tree.branch,
            "base": tree.base,
            "paths": list(stat.paths[:PATHS_KEPT]),
        }
        return dict(tree.diff)

    async def diff(self, base: str, head: str) -> str:
        """The patch of a task's change, from `base` to `head` (commits of the repository)."""
        return await diff_text(self.repo, base, head)

    async def release(self, task: str, state: TaskState) -> None:
        """A landed task's worktree and branch go; any other's stay for inspection."""
        tree = self.tasks.get(task)
        if tree is None or tree.landed is None or state is not TaskState.SUCCEEDED:
            return
        try:
            async with self.lock:
                await self._remove(tree.path, tree.branch)
        except (GitError, OSError):
            return  # left behind, like a failed task's: `git worktree list` shows it
        for remote in self.remotes.values():
            with contextlib.suppress(Exception):  # left behind there: `clean` lists it
                await remote.remove(task, tree.branch)

    # --- worktrees ------------------------------------------------------------------

    def branch_of(self, task: str) -> str:
        """The branch of `task`'s worktree."""
        return BRANCH_PREFIX + task

    def stack_on(self, task: str, upstream: str | None) -> None:
        """The next agent attempt of `task` starts on `upstream`'s branch (its
        agent's committed work, not landed yet), None: on the target's tip."""
        self._stacks[task] = upstream

    async def _fresh(
        self, task: str, previous: TaskTree | None, upstream: str | None = None
    ) -> TaskTree:
        """A new worktree for `task` at the target's tip (or on `upstream`'s
        branch), replacing its old one."""
        path = self.root / task
        branch = self.branch_of(task)
        try:
            exists = await rev(self.repo, f"refs/heads/{branch}")
            if exists is not None and branch not in self._owned():
                raise WorkspaceError(
                    f"branch '{branch}' exists in {self.repo} and fleetdeck did not make it: "
                    "rename or delete it, fleetdeck will not reuse it"
                )
            await self._remove(path, branch)
            tip = await rev(self.repo, f"refs/heads/{self.target}")
            if tip is None:
                raise WorkspaceError(f"the target branch '{self.target}' is gone from {self.repo}")
            fork = None
            if upstream is not None:
                # Its upstream's work as its agent left it (gone: it landed, so
                # the tip holds it).
                fork = await rev(self.repo, f"refs/heads/{self.branch_of(upstream)}")
            self.root.mkdir(parents=True, exist_ok=True)
            # Recorded before it exists: a supervisor killed right after still
            # knows the branch is its own.
            self._own(branch, True)
            start = fork or tip
            await git(self.repo, "worktree", "add", "-q", "-b", branch, str(path), start)
            if fork is not None:
                # Beside the worktree's own git files (gone with it): a restarted
                # supervisor finds where its own change starts.
                await write_fork(path, fork)
        except GitError as exc:
            raise WorkspaceError(f"cannot make the worktree of '{task}': {exc}") from None
        except OSError as exc:
            raise WorkspaceError(f"cannot make the worktree of '{task}': {exc}") from None
        self._copy_into(path)
        if self.spec.setup is not None:
            await self._setup(path)
        tree = TaskTree(path=path, branch=branch, base=start)
        if fork is not None:
            tree.upstream, tree.fork = upstream, fork
        if previous is not None:
            tree.conflict = previous.conflict
        self.tasks[task] = tree
        return tree

    async def tree_of(self, task: str) -> TaskTree:
        """What fleetdeck knows of `task`'s worktree (found again after a restart)."""
        return self.tasks.get(task) or await self._adopt(task)

    async def identity(self, where: Path) -> tuple[str, ...]:
        """The `-c` options fleetdeck commits with in `where`."""
        return (*await self._commit_identity(where), "-c", "commit.gpgsign=false")

    async def _adopt(self, task: str) -> TaskTree:
        """The worktree a task left in an earlier supervisor's run (taken up)."""
        path = self.root / task
        if not path.is_dir():
            raise WorkspaceError(f"the worktree of '{task}' is gone ({path})")
        fork = await read_fork(path)
        base = fork or (await git(self.repo, "merge-base", self.target, self.branch_of(task)))
        # Taken up at its merge stage, its CI passed on what its worktree holds
        # (a later CI attempt sets it again in `prepare`).
        tested = await rev(path, "HEAD")
        tree = TaskTree(path=path, branch=self.branch_of(task), base=base.strip(), tested=tested)
        tree.fork = fork
        self.tasks[task] = tree
        return tree

    async def _remove(self, path: Path, branch: str) -> None:
        """Remove the worktree at `path` and the branch `branch` (fleetdeck's own)."""
        for entry in await worktrees(self.repo):
            if entry.path == path or entry.branch == f"refs/heads/{branch}":
                await git(self.repo, "worktree", "remove", "--force", str(entry.path))
        if path.is_relative_to(self.root):
            # A worktree whose registration was lost (a stat and a small tree:
            # not worth a thread).
            shutil.rmtree(path, ignore_errors=True)
        await git(self.repo, "worktree", "prune")
        if await rev(self.repo, f"refs/heads/{branch}") is not None:
            await git(self.repo, "branch", "-q", "-D", branch)
        self._own(branch, False)

    def _copy_into(self, path: Path) -> None:
        for name in self.spec.copy:
            source = self.repo / name
            if source.is_file():
                (path / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, path / name)

    async def _setup(self, path: Path) -> None:
        assert self.spec.setup is not None
        try:
            done = await command(self.spec.setup, cwd=path)
        except GitError as exc:
            raise WorkspaceError(f"[repo] setup cannot start: {exc}") from None
        if done.code != 0:
            said = first_line((done.err or done.out)[-2000:])
            raise WorkspaceError(f"[repo] setup exited {done.code}: {said}")

    async def _commit_identity(self, where: Path) -> tuple[str, ...]:
        """The user's identity when git has one, else fleetdeck's."""
        if self._identity is None:
            known = await run(where, "var", "GIT_COMMITTER_IDENT")
            self._identity = () if known.code == 0 else FALLBACK_IDENTITY
        return self._identity

    # --- what fleetdeck made --------------------------------------------------------

    def _owned(self) -> set[str]:
        return owned_branches(self.root)

    def _own(self, branch: str, owned: bool) -> None:
        names = self._owned()
        if (branch in names) == owned:
            return
        record_repo(self.root, self.repo)
        record_owned(self.root, names | {branch} if owned else names - {branch})


def commit_subject(prompt: str) -> str:
    """The subject of the commit of an agent's work: the prompt's first line,
    without a Markdown heading's or a comment's leading `#` ("# Fix the login"
    reads "Fix the login"); "changes" for an empty prompt."""
    for line in prompt.splitlines():
        words = line.strip().lstrip("#").strip()
        if words:
            return words
    return "changes"
