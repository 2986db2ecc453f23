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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

# psutil is imported where a tree is killed or an orphan examined, not here: a run
# whose attempts exit cleanly never needs it, and importing it is ~11 ms of every
# `fleetdeck run` (measured with -X importtime).
if TYPE_CHECKING:
    import psutil

# How often to look again while waiting for a tree to go: fast at first (most
# processes exit at once on SIGTERM), slower for stubborn ones.
_FIRST_POLL = 0.01
_MAX_POLL = 0.2
# After SIGKILL the kernel finishes the job almost at once; this bounds how long
# we keep sweeping for processes forked in the last instant.
_KILL_SWEEPS = 50


@dataclass(slots=True, frozen=True)
class ProcStat:
    """One live process as /proc/PID/stat describes it."""

    pid: int
    ppid: int
    pgid: int
    cpu_ticks: int  # user + system time, in clock ticks
    rss_pages: int


def process_table() -> list[ProcStat]:
    """Every live (non-zombie) process, from /proc/*/stat.

    Read directly rather than through psutil: a tree kill polls this, and it must
    stay cheap even with a few hundred processes (a fork bomb) on a busy machine.
    """
    table = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue  # gone since listdir
        # The command name may hold spaces and parentheses: split after the last ')'.
        # Fields from there: state ppid pgrp session tty tpgid flags minflt cminflt
        # majflt cmajflt utime stime cutime cstime priority nice threads itreal
        # starttime vsize rss ...
        fields = raw[raw.rfind(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            continue
        table.append(
            ProcStat(
                pid=int(name),
                ppid=int(fields[1]),
                pgid=int(fields[2]),
                cpu_ticks=int(fields[11]) + int(fields[12]),
                rss_pages=int(fields[21]),
            )
        )
    return table


def trees(table: Iterable[ProcStat], roots: Mapping[int, Iterable[int]]) -> dict[int, set[int]]:
    """For each key of `roots`, the pids of its root processes and all their
    descendants, and the members of groups named like a root (an attempt's
    group id is its leader's pid)."""
    children: dict[int, list[int]] = {}
    groups: dict[int, list[int]] = {}
    for proc in table:
        children.setdefault(proc.ppid, []).append(proc.pid)
        groups.setdefault(proc.pgid, []).append(proc.pid)
    found: dict[int, set[int]] = {}
    for key, pids in roots.items():
        seen: set[int] = set()
        stack = [pid for root in pids for pid in (root, *groups.get(root, ()))]
        while stack:
            pid = stack.pop()
            if pid not in seen:
                seen.add(pid)
                stack.extend(children.get(pid, ()))
        found[key] = seen
    return found


def _scan(roots: Iterable[int], pgid: int | None) -> set[int]:
    """Pids of live descendants of `roots` and live members of group `pgid`."""
    children: dict[int, list[int]] = {}
    found: set[int] = set()
    for proc in process_table():
        children.setdefault(proc.ppid, []).append(proc.pid)
        if proc.pgid == pgid:
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


_boot_time: float | None = None
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def process_start_time(pid: int) -> float | None:
    """When process `pid` started, in seconds since the epoch (None: no such process).

    With the pid it names one process for good: a pid reused later belongs to a
    process that started later. Read from /proc/PID/stat (cheaper than psutil,
    and it runs once per attempt), to within a clock tick.
    """
    global _boot_time
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    if _boot_time is None:
        import psutil

        _boot_time = psutil.boot_time()
    # Field 22 of stat, counted after the command name (see process_table).
    ticks = int(raw[raw.rfind(b")") + 2 :].split()[19])
    return round(_boot_time + ticks / _TICKS_PER_SECOND, 2)


def is_zombie(pid: int) -> bool:
    """True when `pid` has ended and waits for its parent to reap it (or is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return True
    return raw[raw.rfind(b")") + 2 : raw.rfind(b")") + 3] in (b"Z", b"X")


def same_process(pid: int, started: float) -> bool:
    """True while `pid` is still the process that started at `started` (zombie or not)."""
    now = process_start_time(pid)
    return now is not None and abs(now - started) < 0.05


def descendants(roots: Iterable[int]) -> set[int]:
    """Pids of every live descendant of `roots` (not the roots themselves)."""
    return _scan(roots, None)


def _handle(pid: int) -> psutil.Process | None:
    """A psutil handle for `pid` (it remembers the start time, so a reused pid is
    never mistaken for ours), or None when the process is already gone."""
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _alive(proc: psutil.Process) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(proc: psutil.Process, signum: int) -> None:
    import psutil

    with contextlib.suppress(psutil.Error):
        proc.send_signal(signum)


def group_exists(pgid: int) -> bool:
    """True while any process, a zombie included, is in group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TreeKill:
    """Stopping one process tree: SIGTERM to all, then SIGKILL after the grace.

    It remembers every process it has seen, so a process that leaves the tree
    (its parent died and it was re-parented) is still killed. `hurry()` shortens
    the grace of a stop in progress (a second Ctrl-C); `adopt()` adds processes
    found elsewhere (orphans handed to a subreaper).
    """

    def __init__(
        self,
        root: int | None,
        *,
        pgid: int | None,
        grace: float,
        extra: Iterable[psutil.Process] = (),
    ) -> None:
        self._pgid = pgid
        self._deadline = time.monotonic() + grace
        self._tracked: dict[int, psutil.Process] = {}
        self._signalled: set[int] = set()
        self._wake = asyncio.Event()
        if root is not None and (proc := _handle(root)) is not None:
            self._tracked[root] = proc
        self.adopt(extra)

    def adopt(self, processes: Iterable[psutil.Process]) -> None:
        """Make `processes` (and, from now on, their descendants) part of this kill."""
        for proc in processes:
            self._tracked.setdefault(proc.pid, proc)
        self._wake.set()

    def hurry(self, grace: float) -> None:
        """Bring the SIGKILL forward to at most `grace` seconds from now."""
        self._deadline = min(self._deadline, time.monotonic() + grace)
        self._wake.set()

    def _look_again(self) -> list[psutil.Process]:
        """Track what appeared since the last look; return the live tracked ones."""
        live = [proc for proc in self._tracked.values() if _alive(proc)]
        for pid in _scan([proc.pid for proc in live], self._pgid):
            if pid not in self._tracked and (proc := _handle(pid)) is not None:
                self._tracked[pid] = proc
                live.append(proc)
        return live

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def run(self) -> None:
        """Carry the kill out; return when every process found is gone."""
        poll = _FIRST_POLL
        while True:
            live = self._look_again()
            if not live:
                return
            for proc in live:
                if proc.pid not in self._signalled:
                    self._signalled.add(proc.pid)
                    _signal(proc, signal.SIGTERM)
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                break
            await self._pause(min(poll, remaining))
            poll = min(poll * 2, _MAX_POLL)

        for _ in range(_KILL_SWEEPS):
            live = self._look_again()
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


# Children this process starts on its own account (git for the workspace, say),
# not attempts: the subreaper's sweep leaves them, and their exit status, to the
# code that waits for them.
_OWN_CHILDREN: set[int] = set()


def claim_child(pid: int, claimed: bool = True) -> None:
    """Mark `pid`, a child started here that is not an attempt, as waited for by
    its starter (False: it has been waited for)."""
    if claimed:
        _OWN_CHILDREN.add(pid)
    else:
        _OWN_CHILDREN.discard(pid)


def is_own_child(pid: int) -> bool:
    """True for a child claimed by `claim_child`."""
    return pid in _OWN_CHILDREN


def direct_children() -> set[int]:
    """Pids of this process's children, from /proc (cheap: no full /proc scan)."""
    found: set[int] = set()
    task_dir = f"/proc/{os.getpid()}/task"
    try:
        threads = os.listdir(task_dir)
    except OSError:
        return _children_from_psutil()
    for tid in threads:
        try:
            with open(f"{task_dir}/{tid}/children") as listing:
                found.update(int(pid) for pid in listing.read().split())
        except OSError:
            return _children_from_psutil()
    return found


def _children_from_psutil() -> set[int]:
    """Pids of this process's children where /proc does not list them."""
    import psutil

    return {proc.pid for proc in psutil.Process().children()}
