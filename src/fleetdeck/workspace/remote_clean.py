"""`fleetdeck clean` on the SSH hosts: the worktrees fleetdeck left in a host's
clone (`repo` in `[hosts.NAME]`), removed without losing anything.

What a failed or cancelled task left there stays after its run, as its local
worktree does. Cleaning connects to each host whose record names a branch
(`<worktrees dir>/.hosts/HOST/.branches`), as the run did (the host's table:
address, user, identity, known_hosts), and for each of those branches removes
its worktree and the branch, except when something would be lost: a worktree
with uncommitted changes, or a head this machine's repository does not have
(it never came back), is kept and said why. With `aside` (a --fresh run) what
is kept is renamed `fleetdeck/<task>@N` there, so the new run's worktree of
the task cannot replace it. A host that cannot be reached keeps its worktrees
and is named.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from fleetdeck.workspace.clean import ASIDE, BRANCH_PREFIX, owned_branches
from fleetdeck.workspace.git import run
from fleetdeck.workspace.remote import HOSTS_DIR, RemoteError, RemoteRepo

if TYPE_CHECKING:
    from fleetdeck.config import Fleet, HostSpec
    from fleetdeck.executors.base import HostHealth

# $1 task, $2 branch: "path P" when its worktree is there, a "changed P" line per
# uncommitted path, and "head H" when its branch is.
_SURVEY = r"""
w=$t/$1
if [ -d "$w" ]; then
  echo "path $w"
  git -C "$w" status --porcelain --untracked-files=all | cut -c4- | sed 's/^/changed /'
fi
if h=$(git rev-parse --verify --quiet "refs/heads/$2"); then echo "head $h"; fi
"""
# $1 task, $2 branch, $3 its new name, $4 the worktree's new directory name.
_ASIDE = r"""
git branch -m "$2" "$3" || exit 96
if [ -d "$t/$1" ]; then git worktree move "$t/$1" "$t/$4" || exit 96; fi
"""
# How long a host gets to answer (its connect_timeout counts too) before its
# worktrees are left for next time.
REACH_TIMEOUT = 30.0


def hosts_to_clean(fleet: Fleet, root: Path) -> list[str]:
    """The hosts with a clone where fleetdeck recorded branches of its own."""
    return [
        name
        for name, spec in fleet.config.hosts.items()
        if spec.repo is not None and owned_branches(root / HOSTS_DIR / name)
    ]


def clean_hosts(
    fleet: Fleet,
    repo: Path,
    root: Path,
    *,
    states: dict[str, str] | None = None,
    active: Collection[str] = (),
    dry_run: bool = False,
    aside: bool = False,
) -> list[str]:
    """Survey and (unless `dry_run`) clean every host's leftovers; a line each."""
    names = hosts_to_clean(fleet, root)
    if not names:
        return []
    return asyncio.run(_clean(fleet, names, repo, root, states or {}, active, dry_run, aside))


async def _clean(
    fleet: Fleet,
    names: list[str],
    repo: Path,
    root: Path,
    states: dict[str, str],
    active: Collection[str],
    dry_run: bool,
    aside: bool,
) -> list[str]:
    lines: list[str] = []
    for name in names:
        spec = fleet.config.hosts[name]
        lines += await _clean_host(
            fleet, name, spec, repo, root, states, active, dry_run=dry_run, aside=aside
        )
    return lines


async def _clean_host(
    fleet: Fleet,
    name: str,
    spec: HostSpec,
    repo: Path,
    root: Path,
    states: dict[str, str],
    active: Collection[str],
    *,
    dry_run: bool,
    aside: bool,
) -> list[str]:
    # asyncssh's import is costly: only a clean that has a host to visit pays it.
    from fleetdeck.executors.base import HostLostError, HostState
    from fleetdeck.executors.ssh import SshExecutor

    executor = SshExecutor(
        name, spec, grace=fleet.config.fleet.grace_period, base_dir=fleet.base_dir
    )
    said: list[HostHealth] = []
    answered = asyncio.Event()

    def heard(health: HostHealth) -> None:
        said.append(health)
        answered.set()  # up, or down at the first try: no waiting for a retry

    await executor.open(heard)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(answered.wait(), REACH_TIMEOUT)
        if not said or said[-1].state is not HostState.UP:
            why = said[-1].reason if said and said[-1].reason else "no answer"
            return [f"cannot reach host {name} ({why}): its worktrees stay; clean again later"]
        remote = RemoteRepo(executor, spec.repo or "", repo, root, fleet.config.repo)
        try:
            return await _clean_leftovers(
                remote, repo, states, active, dry_run=dry_run, aside=aside
            )
        except (RemoteError, HostLostError) as exc:
            return [f"cannot clean host {name}: {exc}; what is left there stays"]
    finally:
        await executor.aclose()


async def _clean_leftovers(
    remote: RemoteRepo,
    repo: Path,
    states: dict[str, str],
    active: Collection[str],
    *,
    dry_run: bool,
    aside: bool,
) -> list[str]:
    """Each branch fleetdeck made in `remote`'s clone: removed, or kept and why."""
    name = remote.host
    spec = remote.spec
    copied = set(spec.copy) if spec is not None else set()
    lines: list[str] = []
    for branch in sorted(remote.owned()):
        task = branch.removeprefix(BRANCH_PREFIX)
        state = states.get(task)
        of = f"task {task}" + (f", {state}" if state else "")
        out = await remote.script(_SURVEY, task, branch, doing="look at its worktree")
        path, changed, head = _parse(out.decode(errors="surrogateescape"))
        where = f"{name}:{path}" if path else f"branch {branch} on {name}"
        kept = await _why_kept(repo, task, branch, active, changed - copied, head)
        if kept is None:
            if not dry_run:
                await remote.remove(task, branch)
            verb = "would remove" if dry_run else "removing"
            lines.append(f"{verb} {where} ({of})")
            continue
        line = f"keeping {where} ({of}): {kept}"
        if aside and not dry_run and ASIDE not in task:
            line += f"; set aside as {await _set_aside(remote, task, branch)}"
        lines.append(line)
    return lines


def _parse(text: str) -> tuple[str | None, set[str], str | None]:
    path = head = None
    changed: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "path":
            path = value
        elif key == "changed":
            changed.add(value)
        elif key == "head":
            head = value
    return path, changed, head


async def _why_kept(
    repo: Path,
    task: str,
    branch: str,
    active: Collection[str],
    changed: set[str],
    head: str | None,
) -> str | None:
    if task in active:
        return "its run did not finish: resume it, or run with --fresh"
    if changed:
        shown = sorted(changed)
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        return f"uncommitted changes to {', '.join(shown[:5])}{more}"
    if head is not None and (await run(repo, "cat-file", "-e", f"{head}^{{commit}}")).code != 0:
        return (
            f"its head {head[:12]} never came back here (`git branch -D {branch}` there drops it)"
        )
    return None


async def _set_aside(remote: RemoteRepo, task: str, branch: str) -> str:
    """Rename a kept branch there (and move its worktree) to `<task>@N`."""
    owned = remote.owned()
    number = 1
    while f"{branch}{ASIDE}{number}" in owned:
        number += 1
    new = f"{branch}{ASIDE}{number}"
    remote.own(new, True)
    await remote.script(
        _ASIDE, task, branch, new, f"{task}{ASIDE}{number}", doing=f"set aside '{task}'"
    )
    remote.own(branch, False)
    return new
