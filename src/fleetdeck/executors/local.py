"""Local attempts: subprocesses in their own session, reaped through a pidfd.

Each attempt starts in a new session (so in its own process group), with stdin
from /dev/null and stdout and stderr appended straight to the attempt's log file:
the output never passes through fleetdeck, so an agent printing a gigabyte costs
us nothing. We learn of the exit through a pidfd on the event loop rather than
asyncio's child watcher, which starts a thread per process.

Nothing an attempt starts may outlive it. On stop: SIGTERM to the group and to
every descendant found, a grace period, SIGKILL to the rest (proctree). On a
normal exit, whatever the attempt left running in its group is stopped the same
way, in the background. When this process is a child subreaper (the CLI makes
it one), orphans that escaped both group and parentage (double fork + setsid)
are re-parented to us; `sweep()` finds them, tells by their environment which
attempt they came from, and stops them with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time

import psutil

from fleetdeck.executors.base import AttemptProcess, Executor, LaunchError, LaunchRequest, Usage
from fleetdeck.executors.proctree import (
    TreeKill,
    direct_children,
    group_exists,
    process_table,
    trees,
)
from fleetdeck.model import LOCAL_HOST

# The variable by which an adopted orphan is traced back to its attempt.
ATTEMPT_ID_VARIABLE = "FLEETDECK_ATTEMPT_ID"
_ATTEMPT_ID_KEY = ATTEMPT_ID_VARIABLE.encode()
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# How often the subreaper looks for adopted orphans while attempts run.
SWEEP_INTERVAL = 1.0


class LocalProcess(AttemptProcess):
    """One local attempt's main process, plus what it leaves behind."""

    def __init__(self, popen: subprocess.Popen[bytes], attempt_id: int, owner: LocalExecutor):
        self.pid = popen.pid
        self._pid: int = popen.pid
        self.attempt_id = attempt_id
        self._popen = popen
        self._owner = owner
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        self._kill: TreeKill | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._watch(loop)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            pidfd = os.pidfd_open(self._pid)
        except (AttributeError, OSError):
            # No pidfd (old kernel): wait in a thread instead.
            waiter = loop.run_in_executor(None, self._popen.wait)
            waiter.add_done_callback(lambda done: self._on_exit(done.result()))
            return

        def readable() -> None:
            code = self._popen.poll()
            if code is None:
                return  # not reaped yet; pidfd stays readable, we will be called again
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._on_exit(code)

        loop.add_reader(pidfd, readable)

    def _on_exit(self, code: int) -> None:
        if not self._exited.done():
            self._exited.set_result(code)
        self._owner._attempt_exited(self)

    @property
    def exited(self) -> bool:
        """True once the main process has ended and been reaped."""
        return self._exited.done()

    async def wait(self) -> int:
        """The main process's exit status (-N when killed by signal N)."""
        return await asyncio.shield(self._exited)

    async def stop(self, grace: float) -> None:
        """SIGTERM the tree, wait up to `grace`, SIGKILL the rest; return when all is gone.

        A second call with a shorter grace (a second Ctrl-C) hurries the stop in
        progress rather than starting over: the first one knows every process of
        the tree, including those that left it since.
        """
        if self._kill is None:
            self._kill = TreeKill(
                self._pid,
                pgid=self._pid,
                grace=grace,
                extra=self._owner.adopted_by(self.attempt_id),
            )
            self._stopping = asyncio.ensure_future(self._terminate(self._kill))
            self._owner._track(self._kill, self._stopping)
        else:
            self._kill.hurry(grace)
        assert self._stopping is not None
        await asyncio.shield(self._stopping)

    async def _terminate(self, kill: TreeKill) -> None:
        try:
            await kill.run()
            await self._exited
        finally:
            self._owner._attempt_stopped(self)

    @property
    def stopping(self) -> TreeKill | None:
        """The kill in progress, once stop() was called."""
        return self._kill


class LocalExecutor(Executor):
    """Starts attempts as processes on this machine."""

    host = LOCAL_HOST

    def __init__(self, *, grace: float = 5.0, adopt_orphans: bool = False) -> None:
        """`grace` is how long leftovers get after SIGTERM when an attempt ends.

        With `adopt_orphans`, this process must already be a child subreaper
        (`proctree.become_subreaper()`): the executor then takes care of every
        process re-parented to it that carries an attempt's marker.
        """
        self._grace = grace
        self._adopt = adopt_orphans
        self._live: dict[int, LocalProcess] = {}  # pid -> attempt still running
        self._attempt_of: dict[int, LocalProcess] = {}  # attempt id -> its process
        # Tree kills in progress (stops and leftover cleanups); aclose() awaits them.
        self._cleanups: dict[asyncio.Future[None], TreeKill] = {}
        # Adopted orphans by attempt id; children of ours that are not attempts.
        self._adopted: dict[int, dict[int, psutil.Process]] = {}
        self._foreign: set[int] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._empty_inputs_files: dict[str, str] = {}
        self._usage: dict[int, Usage] = {}
        self._last_ticks: dict[int, int] = {}
        self._last_sample = 0.0
        self._base_env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
        # One /dev/null for every attempt's stdin (Popen would open one each time).
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    async def start(self, request: LaunchRequest) -> LocalProcess:
        """Start `request` as a local process. Raises LaunchError."""
        # Popen encodes every variable of `env` for every process; starting from
        # an environment encoded once saves most of that.
        env = dict(self._base_env)
        for key, value in request.env.items():
            env[os.fsencode(key)] = os.fsencode(value)
        env[_ATTEMPT_ID_KEY] = str(request.attempt_id).encode()
        env[b"FLEETDECK_OUTPUT"] = os.fsencode(request.output_path)
        # Creating a file costs this machine up to half a millisecond of kernel
        # time, the largest part of our per-attempt overhead: tasks without
        # dependencies share one empty inputs file per directory.
        inputs_path = request.inputs_path
        try:
            if request.inputs:
                write_private(inputs_path, json.dumps(dict(request.inputs)).encode())
            else:
                inputs_path = self._empty_inputs(os.path.dirname(inputs_path))
        except OSError as exc:
            raise LaunchError(f"cannot write {inputs_path}: {exc.strerror}") from None
        env[b"FLEETDECK_INPUTS"] = os.fsencode(inputs_path)
        try:
            log_fd = os.open(
                request.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise LaunchError(f"cannot open log {request.log_path}: {exc.strerror}") from None
        try:
            # Popen in a coroutine on purpose: with vfork it returns in about a
            # millisecond, faster than asyncio's own subprocess machinery.
            popen = subprocess.Popen(  # noqa: ASYNC220
                request.argv,
                stdin=self._devnull,
                stdout=log_fd,
                stderr=log_fd,
                cwd=request.cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError as exc:
            raise LaunchError(_not_found(request, exc)) from None
        except PermissionError:
            raise LaunchError(f"permission denied running {request.argv[0]!r}") from None
        except OSError as exc:
            raise LaunchError(f"cannot run {request.argv[0]!r}: {exc.strerror}") from None
        finally:
            os.close(log_fd)
        process = LocalProcess(popen, request.attempt_id, self)
        self._live[process._pid] = process
        self._attempt_of[request.attempt_id] = process
        if self._adopt and self._sweeper is None:
            self._schedule_sweep()
        return process

    def _empty_inputs(self, directory: str) -> str:
        path = self._empty_inputs_files.get(directory)
        if path is None:
            path = os.path.join(directory, "no-inputs.json")
            write_private(path, b"{}")
            self._empty_inputs_files[directory] = path
        return path

    def sample(self) -> None:
        """Measure CPU and memory of every running attempt's tree (one /proc pass)."""
        now = time.monotonic()
        table = {proc.pid: proc for proc in process_table()}
        roots = {
            process.attempt_id: [process._pid, *self._adopted.get(process.attempt_id, {})]
            for process in self._live.values()
        }
        usage: dict[int, Usage] = {}
        ticks_now: dict[int, int] = {}
        for attempt_id, pids in trees(table.values(), roots).items():
            cpu_ticks = rss_pages = count = 0
            for pid in pids:
                proc = table.get(pid)
                if proc is None:
                    continue
                count += 1
                rss_pages += proc.rss_pages
                # CPU is a rate: ticks since the last sample of the same process.
                ticks_now[pid] = proc.cpu_ticks
                cpu_ticks += proc.cpu_ticks - self._last_ticks.get(pid, proc.cpu_ticks)
            elapsed = now - self._last_sample if self._last_sample else 0.0
            cpu = 100.0 * cpu_ticks / (_CLOCK_TICKS * elapsed) if elapsed > 0 else 0.0
            usage[attempt_id] = Usage(
                cpu_percent=cpu, rss_bytes=rss_pages * _PAGE_SIZE, processes=count
            )
        self._last_ticks = ticks_now
        self._last_sample = now
        self._usage = usage

    def usage(self) -> dict[int, Usage]:
        """CPU and memory of running attempts, as of the last `sample()`."""
        return self._usage

    def adopted_by(self, attempt_id: int) -> list[psutil.Process]:
        """Orphans of attempt `attempt_id` that were re-parented to us."""
        self.sweep()
        return list(self._adopted.get(attempt_id, {}).values())

    def _attempt_exited(self, process: LocalProcess) -> None:
        self._live.pop(process._pid, None)
        if process.stopping is not None:
            return  # stop() is taking the whole tree down; it still owns the attempt
        self._attempt_of.pop(process.attempt_id, None)
        self.sweep()
        leftovers = self._adopted.pop(process.attempt_id, {})
        # The group id is the leader's pid, which the kernel does not reuse while
        # any member of the group is alive: signalling it can only hit ours.
        if leftovers or group_exists(process._pid):
            self._spawn_cleanup(process._pid, process._pid, list(leftovers.values()))

    def _attempt_stopped(self, process: LocalProcess) -> None:
        self._attempt_of.pop(process.attempt_id, None)
        self._adopted.pop(process.attempt_id, None)

    def _spawn_cleanup(self, root: int, pgid: int | None, extra: list[psutil.Process]) -> None:
        kill = TreeKill(root, pgid=pgid, grace=self._grace, extra=extra)
        self._track(kill, asyncio.ensure_future(kill.run()))

    def _track(self, kill: TreeKill, running: asyncio.Future[None]) -> None:
        """Keep a tree kill in progress until it is done; aclose() waits for all."""
        self._cleanups[running] = kill

        def finished(task: asyncio.Future[None]) -> None:
            self._cleanups.pop(task, None)
            self.sweep()  # reap adopted orphans the kill just ended

        running.add_done_callback(finished)

    def hurry(self) -> None:
        """Every kill in progress sends its SIGKILL now (a second Ctrl-C)."""
        for kill in list(self._cleanups.values()):
            kill.hurry(0.0)

    def sweep(self) -> None:
        """Find adopted orphans and reap dead ones (subreaper mode only).

        An orphan whose attempt is still running is kept with that attempt (it may
        be part of the work, say a language server the agent talks to) and is
        stopped with it; one whose attempt has ended is stopped at once.
        """
        if not self._adopt:
            return
        for pid in direct_children():
            if pid in self._live or pid in self._foreign:
                continue
            if any(pid in group for group in self._adopted.values()):
                self._reap_if_dead(pid)
                continue
            self._classify(pid)

    def _classify(self, pid: int) -> None:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                # Dead before we saw it; in subreaper mode every child that is not
                # an attempt leader came from an attempt, and the zombie is ours.
                self._reap_if_dead(pid)
                return
            marker = proc.environ().get(ATTEMPT_ID_VARIABLE)
        except psutil.Error:
            return
        if marker is None or not marker.isdigit():
            self._foreign.add(pid)
            return
        attempt_id = int(marker)
        owner = self._attempt_of.get(attempt_id)
        if owner is None:
            self._spawn_cleanup(pid, None, [])
        elif owner.stopping is not None:
            owner.stopping.adopt([proc])
        else:
            self._adopted.setdefault(attempt_id, {})[pid] = proc

    def _reap_if_dead(self, pid: int) -> None:
        with contextlib.suppress(ChildProcessError):
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done:
                for group in self._adopted.values():
                    group.pop(pid, None)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.sweep()
            if self._live or self._cleanups or any(self._adopted.values()):
                self._sweeper = loop.call_later(SWEEP_INTERVAL, tick)
            else:
                self._sweeper = None

        self._sweeper = loop.call_later(SWEEP_INTERVAL, tick)

    async def aclose(self) -> None:
        """Stop whatever is still running and wait until every leftover is gone."""
        running = list(self._live.values())
        await asyncio.gather(*(process.stop(self._grace) for process in running))
        self.sweep()
        for group in self._adopted.values():
            for proc in group.values():
                self._spawn_cleanup(proc.pid, None, [])
        self._adopted.clear()
        while self._cleanups:
            await asyncio.gather(*list(self._cleanups), return_exceptions=True)
        self.sweep()  # reap what the last cleanups killed
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1


def write_private(path: str, data: bytes) -> None:
    """Write `data` to a new or truncated file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _not_found(request: LaunchRequest, exc: FileNotFoundError) -> str:
    if request.cwd is not None and (exc.filename == request.cwd or not os.path.isdir(request.cwd)):
        return f"workdir does not exist: {request.cwd}"
    return f"command not found: {request.argv[0]!r}"
