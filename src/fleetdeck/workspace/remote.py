"""A task's worktree in a clone on an SSH host (`repo = "/path"` in `[hosts.NAME]`).

An agent on such a host works there, not here: fleetdeck makes the task's
worktree in the host's clone, over the host's own SSH connection (the
executor's `run_script`: one session, a small POSIX sh script, git on the
host), and brings the agent's work back before CI and landing, which run here.

Commits travel as git bundles streamed over that connection, both ways:

- before a worktree is made there, the target's tip is sent: a bundle of the
  commits the host's clone lacks (everything but what its branches already
  hold), unbundled into its object store. No ref of the clone moves: the new
  worktree's branch is the only thing that points at it;
- after the agent's attempt, what it left is committed there and the commits
  from the worktree's base to its head come back the same way, into this
  repository; the task's local worktree (CI's, the train's) moves to them.

Why bundles and not `git fetch` over ssh: they use the connection fleetdeck
already holds, with its host key checked against known_hosts (or pinned with
`trust_unknown_host_key`) and its identity, and need neither an ssh client
here nor a git daemon or a writable remote there: only git and sh on the host.

The worktrees live in the clone's git directory (`<git dir>/fleetdeck-worktrees/
TASK`: never among its tracked files, always writable by whoever can commit
there). Fleetdeck only deletes or recreates branches it made there, named in
`<worktrees dir>/.hosts/HOST/.branches` on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from fleetdeck.executors.base import LaunchError
from fleetdeck.workspace.clean import BRANCH_PREFIX, owned_branches, record_owned
from fleetdeck.workspace.git import git, run

if TYPE_CHECKING:
    from fleetdeck.config import Fleet, RepoSpec
    from fleetdeck.workspace.worktrees import TaskTree

# The directory, in the clone's git directory, holding fleetdeck's worktrees.
REMOTE_WORKTREES = "fleetdeck-worktrees"
# Where the branches fleetdeck made on each host are named (in the worktrees dir).
HOSTS_DIR = ".hosts"
# At most this many of the host's branch tips are left out of a bundle (what it has).
KNOWN_MAX = 500

# Every script starts here: $1 is the clone's path (~/ from the login's home);
# it leaves the clone as the current directory, its git directory in $g and
# the worktrees' directory in $t, and shifts $1 away. Exit codes 90-92 are its
# own (see _PRELUDE_ERRORS).
_PRELUDE = r"""
export LC_ALL=C GIT_TERMINAL_PROMPT=0
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_COMMON_DIR
r=$1
case $r in "~/"*) r=$HOME/${r#"~/"};; esac
cd "$r" 2>/dev/null || exit 90
command -v git >/dev/null 2>&1 || exit 91
g=$(git rev-parse --git-common-dir 2>/dev/null) || exit 92
g=$(cd "$g" && pwd -P) || exit 92
t=$g/fleetdeck-worktrees
shift
"""
_PRELUDE_ERRORS = {
    90: "no directory {path} there (or no permission to enter it)",
    91: "git is not installed there (not on the login's PATH)",
    92: "{path} is not a git repository",
}

# What the host has: "have" when it has commit $1, else its branches' tips.
_KNOWS = r"""
if git cat-file -e "$1^{commit}" 2>/dev/null; then echo have; exit 0; fi
git for-each-ref --format='%(objecttype) %(objectname)' refs/heads refs/remotes
"""
# A bundle on stdin, into the clone's objects (no ref moves).
_RECEIVE = r"""
f=$(mktemp) || exit 93
trap 'rm -f "$f"' EXIT
cat > "$f" || exit 93
git bundle unbundle "$f" >/dev/null
"""
# $1 task, $2 branch, $3 commit, $4 1 when fleetdeck made the branch; then the
# files to copy from the clone's checkout. Prints the worktree's path.
_FRESH = r"""
w=$t/$1
if git rev-parse --verify --quiet "refs/heads/$2" >/dev/null && [ "$4" != 1 ]; then exit 95; fi
git worktree remove --force "$w" >/dev/null 2>&1
rm -rf "$w"
git worktree prune
if git rev-parse --verify --quiet "refs/heads/$2" >/dev/null; then
  git branch -q -D "$2" || exit 96
fi
mkdir -p "$t" && git worktree add -q -b "$2" "$w" "$3" || exit 96
shift 4
for name in "$@"; do
  if [ -f "$r/$name" ]; then mkdir -p "$(dirname "$w/$name")" && cp -p "$r/$name" "$w/$name"; fi
done
echo "$w"
"""
# $1 task; then [repo] setup's argv, run in the worktree.
_SETUP = r"""
cd "$t/$1" || exit 97
shift
"$@"
"""
# $1 task; then the copied files (not part of the change). The commit message
# on stdin. Prints the worktree's HEAD.
_COMMIT = r"""
cd "$t/$1" 2>/dev/null || exit 97
shift
git add -A || exit 98
if [ $# -gt 0 ]; then git reset -q -- "$@" >/dev/null 2>&1; fi
git diff --cached --quiet
case $? in
  0) ;;
  1) if git var GIT_COMMITTER_IDENT >/dev/null 2>&1; then set --
     else set -- -c user.name=fleetdeck -c user.email=fleetdeck@localhost; fi
     git "$@" -c commit.gpgsign=false commit -q --no-verify -F - || exit 98 ;;
  *) exit 98 ;;
esac
git rev-parse HEAD
"""
# $1 task, $2 the base this machine has: the head's id on a line, then a bundle
# of the commits from the base to the head (none when there are none).
_SEND_BACK = r"""
cd "$t/$1" 2>/dev/null || exit 97
h=$(git rev-parse HEAD) || exit 98
echo "$h"
if [ -n "$(git rev-list -n 1 HEAD "^$2")" ]; then
  git bundle create - HEAD "^$2" 2>/dev/null || exit 98
fi
"""
# $1 task, $2 branch: the worktree and the branch gone, and the worktrees'
# directory once empty.
_REMOVE = r"""
w=$t/$1
git worktree remove --force "$w" >/dev/null 2>&1
rm -rf "$w"
git worktree prune
if git rev-parse --verify --quiet "refs/heads/$2" >/dev/null; then
  git branch -q -D "$2" || exit 96
fi
rmdir "$t" 2>/dev/null
exit 0
"""
# $1 task: the worktree's path when it is there.
_WHERE = r"""
if [ -d "$t/$1" ]; then echo "$t/$1"; fi
"""


@runtime_checkable
class RemoteShell(Protocol):
    """What the workspace needs of an SSH host: its name and a way to run sh there
    (executors.ssh.SshExecutor)."""

    host: str

    async def run_script(
        self, script: str, args: Iterable[str] = (), *, stdin: bytes = b""
    ) -> tuple[int, bytes, bytes]:
        """Run `script` with `args`: exit status, stdout, stderr."""


class RemoteError(LaunchError):
    """The host's clone cannot do what the task needs; one line, naming the host."""


class RemoteRepo:
    """The clone of the fleet's repository on one SSH host, and fleetdeck's
    worktrees in it (one per task whose agent runs there)."""

    def __init__(
        self, shell: RemoteShell, path: str, repo: Path, root: Path, spec: RepoSpec | None = None
    ) -> None:
        """`path`: the clone there; `repo`: this machine's repository; `root`: the
        local worktrees' directory (where the host's branches are recorded);
        `spec`: the fleet's `[repo]`."""
        self.shell = shell
        self.spec = spec
        self.host = shell.host
        self.path = path
        self.repo = repo
        self._record = root / HOSTS_DIR / shell.host
        self._bundles = root
        # git on the host locks what worktrees share: one change there at a time.
        self.lock = asyncio.Lock()

    async def script(
        self,
        script: str,
        *args: str,
        stdin: bytes = b"",
        doing: str,
        known: Mapping[int, str] | None = None,
    ) -> bytes:
        """Run one of the scripts above; its stdout, or RemoteError saying why not
        (`known`: what some exit statuses of the script mean)."""
        code, out, err = await self.shell.run_script(
            _PRELUDE + script, (self.path, *args), stdin=stdin
        )
        if code == 0:
            return out
        if code in _PRELUDE_ERRORS:
            said = _PRELUDE_ERRORS[code].format(path=self.path)
            raise RemoteError(f"{self.host}: [hosts.{self.host}] repo: {said}")
        if known and code in known:
            raise RemoteError(f"{self.host}: {known[code]}")
        lines = [line.strip() for line in err.decode(errors="replace").splitlines()]
        said = next((line for line in lines if line), f"exit status {code}")
        raise RemoteError(f"{self.host}: cannot {doing}: {said}")

    # --- worktrees ---------------------------------------------------------------------

    async def fresh(
        self, task: str, branch: str, commit: str, ref: str, copy: Sequence[str]
    ) -> str:
        """A new worktree for `task` on `branch` at `commit` (a commit of this
        machine's repository, which `ref` points at), replacing its old one; its
        path there."""
        async with self.lock:
            await self.send(commit, ref)
            owned = branch in self.owned()
            self.own(branch, True)  # before it exists, as worktrees.py does
            refused = (
                f"branch '{branch}' exists in {self.path} and fleetdeck did not make it: "
                "rename or delete it, fleetdeck will not reuse it"
            )
            try:
                out = await self.script(
                    _FRESH,
                    task,
                    branch,
                    commit,
                    "1" if owned else "0",
                    *copy,
                    doing=f"make the worktree of '{task}'",
                    known={95: refused},
                )
            except RemoteError:
                if not owned:
                    self.own(branch, False)
                raise
        return out.decode(errors="surrogateescape").strip()

    async def setup(self, task: str, argv: Sequence[str]) -> None:
        """Run `[repo] setup` in the task's worktree there."""
        code, out, err = await self.shell.run_script(_PRELUDE + _SETUP, (self.path, task, *argv))
        if code != 0:
            text = (err or out).decode(errors="replace")[-2000:]
            said = next((line.strip() for line in text.splitlines() if line.strip()), "")
            raise RemoteError(f"{self.host}: [repo] setup exited {code}: {said}")

    async def commit(self, task: str, message: str, copied: Sequence[str]) -> str:
        """Commit what is uncommitted in the task's worktree there; its head."""
        out = await self.script(
            _COMMIT,
            task,
            *copied,
            stdin=message.encode(),
            doing=f"commit the agent's work in the worktree of '{task}'",
            known={97: f"the worktree of '{task}' is gone from {self.path}"},
        )
        return out.decode().strip()

    async def bring_back(self, task: str, base: str) -> str:
        """The commits of the task's worktree there, from `base` to its head, into
        this machine's repository (no ref moves here either); the head."""
        out = await self.script(_SEND_BACK, task, base, doing=f"send back the work of '{task}'")
        head, _, bundle = out.partition(b"\n")
        commit = head.decode().strip()
        if bundle:
            await self._unbundle_here(task, bundle)
        if (await run(self.repo, "cat-file", "-e", f"{commit}^{{commit}}")).code != 0:
            raise RemoteError(f"{self.host}: the work of '{task}' did not come back ({commit})")
        return commit

    async def where(self, task: str) -> str | None:
        """The task's worktree there, when there is one."""
        out = await self.script(_WHERE, task, doing="look for a worktree")
        return out.decode(errors="surrogateescape").strip() or None

    async def remove(self, task: str, branch: str) -> None:
        """The task's worktree and branch there gone (fleetdeck's own only)."""
        if branch not in self.owned():
            return
        async with self.lock:
            await self.script(_REMOVE, task, branch, doing=f"remove the worktree of '{task}'")
            self.own(branch, False)

    # --- commits both ways -------------------------------------------------------------

    async def send(self, commit: str, ref: str) -> None:
        """Make sure the clone there has `commit` (which this machine's `ref` points
        at): a bundle of what it lacks, streamed over the connection."""
        out = await self.script(_KNOWS, commit, doing="read its branches")
        text = out.decode(errors="replace")
        if text.strip() == "have":
            return
        tips = [line.split()[1] for line in text.splitlines() if line.startswith("commit ")]
        known = await self._known_here(tips[: KNOWN_MAX * 4])
        revs = "".join(f"^{tip}\n" for tip in known[:KNOWN_MAX])
        bundle = self._bundles / f".send-{self.host}.bundle"
        try:
            await git(
                self.repo, "bundle", "create", "-q", str(bundle), "--stdin", stdin=f"{ref}\n{revs}"
            )
            data = await asyncio.to_thread(bundle.read_bytes)
        finally:
            with contextlib.suppress(OSError):
                bundle.unlink()
        await self.script(_RECEIVE, stdin=data, doing=f"receive {commit[:12]} into {self.path}")

    async def _known_here(self, tips: list[str]) -> list[str]:
        """Which of `tips` are commits of this machine's repository."""
        if not tips:
            return []
        out = await git(
            self.repo, "cat-file", "--batch-check", stdin="".join(f"{t}\n" for t in tips)
        )
        return [line.split()[0] for line in out.splitlines() if line.split()[1:2] == ["commit"]]

    async def _unbundle_here(self, task: str, data: bytes) -> None:
        bundle = self._bundles / f".back-{task}.bundle"
        try:
            await asyncio.to_thread(bundle.write_bytes, data)
            await git(self.repo, "bundle", "unbundle", str(bundle))
        finally:
            with contextlib.suppress(OSError):
                bundle.unlink()

    # --- what fleetdeck made there -----------------------------------------------------

    def owned(self) -> set[str]:
        """The branches fleetdeck made in the clone there."""
        return owned_branches(self._record)

    def own(self, branch: str, owned: bool) -> None:
        """Record (or forget) a branch fleetdeck made there."""
        names = self.owned()
        if (branch in names) != owned:
            record_owned(self._record, names | {branch} if owned else names - {branch})


def remote_repos(
    fleet: Fleet, hosts: Mapping[str, object], repo: Path, root: Path
) -> dict[str, RemoteRepo]:
    """The clone on each host whose table names a `repo`, by host (`hosts`: the
    run's executors; an SSH host's runs fleetdeck's scripts there)."""
    found: dict[str, RemoteRepo] = {}
    for name, spec in fleet.config.hosts.items():
        shell = hosts.get(name)
        if spec.repo is not None and isinstance(shell, RemoteShell):
            found[name] = RemoteRepo(shell, spec.repo, repo, root, fleet.config.repo)
    return found


async def place_remote(remote: RemoteRepo, task: str, tree: TaskTree, *, agent: bool) -> str:
    """The task's worktree in `remote`'s clone for an attempt there; its path.

    An agent's attempt gets it fresh at the task's base (the target's tip when its
    local worktree was made), unless it keeps the one it has there; a later
    stage's (CI on that host) gets it at the commit it tests."""
    spec = remote_spec(remote)
    if agent:
        if tree.host == remote.host and tree.remote_path is not None:
            return tree.remote_path  # kept (keep_worktree): the local one was kept too
        # (Stacked on an upstream's unlanded branch: that branch holds the base.)
        branch = spec.target if tree.upstream is None else BRANCH_PREFIX + tree.upstream
        commit, ref = tree.base, f"refs/heads/{branch}"
    else:
        assert tree.tested is not None
        commit, ref = tree.tested, f"refs/heads/{tree.branch}"
    path = await remote.fresh(task, tree.branch, commit, ref, spec.copy)
    if spec.setup is not None:
        await remote.setup(task, spec.setup)
    tree.host, tree.remote_path = remote.host, path
    return path


async def bring_back(remote: RemoteRepo, task: str, tree: TaskTree, message: str) -> None:
    """After an agent's attempt there: commit what it left, bring its commits
    here, and move the task's local worktree (fleetdeck's own, where CI and the
    train work) to its head."""
    head = await remote.commit(task, message, remote_spec(remote).copy)
    head = await remote.bring_back(task, tree.base)
    await git(tree.path, "reset", "-q", "--hard", head)


def remote_spec(remote: RemoteRepo) -> RepoSpec:
    """The fleet's `[repo]`, as the remote clone follows it."""
    assert remote.spec is not None
    return remote.spec
