"""Killing a whole process tree: SIGTERM, a grace period, then SIGKILL for the rest.

Supervisors have long bugs about orphaned grandchildren: a child that calls
setsid() leaves the process group, and a process that ignores SIGTERM outlives a
polite group kill. So we find the tree by parentage (psutil) before signalling
anything, signal the group *and* every process found, and keep looking for new
descendants while we wait, until nothing of the attempt is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterable

import psutil

# How often to look again while waiting for a tree to go: fast at first (most
# processes exit at once on SIGTERM), slower for stubborn ones.
_FIRST_POLL = 0.01
_MAX_POLL = 0.1
# After SIGKILL the kernel finishes the job almost at once; this bounds how long
# we keep sweeping for processes forked in the last instant.
_KILL_SWEEPS = 50


def _scan(roots: Iterable[int], pgid: int | None) -> set[int]:
    """Pids of live descendants of `roots` and live members of group `pgid`.

    One pass over /proc: a tree kill polls this, so it must stay cheap even with a
    few hundred processes (a fork bomb). Zombies are skipped: they are dead, and
    their parent (or we, as subreaper) will reap them.
    """
    children: dict[int, list[int]] = {}
    found: set[int] = set()
    for proc in psutil.process_iter(["ppid", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if info["ppid"]:
            children.setdefault(info["ppid"], []).append(proc.pid)
        if pgid is not None:
            with contextlib.suppress(OSError):
                if os.getpgid(proc.pid) == pgid:
                    found.add(proc.pid)
    # Walk down from the roots and from every group member: a member's children
    # may have left the group (setsid) but are still part of the attempt.
    stack = [*roots, *found]
    seen = set(stack)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                found.add(child)
                stack.append(child)
    return found


def descendants(roots: Iterable[int]) -> set[int]:
    """Pids of every live descendant of `roots` (not the roots themselves)."""
    return _scan(roots, None)


def _handle(pid: int) -> psutil.Process | None:
    """A psutil handle for `pid` (it remembers the start time, so a reused pid is
    never mistaken for ours), or None when the process is already gone."""
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(proc: psutil.Process, signum: int) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signum)


def _signal_group(pgid: int, signum: int) -> bool:
    """Signal a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Members we may not signal (setuid programs); the per-process pass tries too.
        return True
    return True


def group_exists(pgid: int) -> bool:
    """True while any process, a zombie included, is in group `pgid`."""
    return _signal_group(pgid, 0)


async def terminate_tree(
    root: int,
    *,
    pgid: int | None,
    grace: float,
    extra: Iterable[psutil.Process] = (),
) -> None:
    """SIGTERM `root`, its group and all their descendants; SIGKILL what survives `grace`.

    `extra` names processes that belong to the attempt but are no longer below
    `root` (orphans adopted by a subreaper). Returns when every process found is
    gone (a zombie counts as gone: its parent reaps it).
    """
    tracked: dict[int, psutil.Process] = {}

    def look_again() -> list[psutil.Process]:
        """Track what appeared since the last look; return the live tracked ones."""
        live = [proc for proc in tracked.values() if _alive(proc)]
        for pid in _scan([proc.pid for proc in live], pgid):
            if pid not in tracked and (proc := _handle(pid)) is not None:
                tracked[pid] = proc
                live.append(proc)
        return live

    if (root_proc := _handle(root)) is not None:
        tracked[root] = root_proc
    for proc in extra:
        tracked.setdefault(proc.pid, proc)

    deadline = time.monotonic() + grace
    poll = _FIRST_POLL
    signalled: set[int] = set()
    while True:
        live = look_again()
        if not live:
            return
        for proc in live:
            if proc.pid not in signalled:
                signalled.add(proc.pid)
                _signal(proc, signal.SIGTERM)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.sleep(min(poll, remaining))
        poll = min(poll * 2, _MAX_POLL)

    for _ in range(_KILL_SWEEPS):
        live = look_again()
        if not live:
            return
        for proc in live:
            _signal(proc, signal.SIGKILL)
        await asyncio.sleep(_FIRST_POLL)


_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux).

    Then a process that an attempt left behind, even after a double fork, is
    re-parented to us instead of to init, where we can find and stop it.
    Returns False where the kernel does not offer it.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result: int = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        return result == 0
    except (OSError, AttributeError):
        return False


def direct_children() -> set[int]:
    """Pids of this process's children, from /proc (cheap: no full /proc scan)."""
    found: set[int] = set()
    task_dir = f"/proc/{os.getpid()}/task"
    try:
        threads = os.listdir(task_dir)
    except OSError:
        return {proc.pid for proc in psutil.Process().children()}
    for tid in threads:
        try:
            with open(f"{task_dir}/{tid}/children") as listing:
                found.update(int(pid) for pid in listing.read().split())
        except OSError:
            return {proc.pid for proc in psutil.Process().children()}
    return found
