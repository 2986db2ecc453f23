"""Local attempts: subprocesses in their own session, reaped through a pidfd.

Each attempt starts in a new session (so in its own process group), with stdin
from /dev/null and stdout and stderr appended straight to the attempt's log file:
the output never passes through fleetdeck, so an agent printing a gigabyte costs
us nothing. Processes start with posix_spawn (half the supervisor's time of
subprocess.Popen, measured), and we learn of the exit through a pidfd on the
event loop rather than asyncio's child watcher, which starts a thread per process.

The session's leader is a shim, which starts the command and records its exit
status: one line `ATTEMPT_ID STATUS` appended to the run's status file, shared
by its attempts (creating a file per attempt cost more than the rest of the
shim). So an attempt survives the death of its supervisor: `recover()` finds
it again by pid and the marks in its environment, waits for it through a pidfd
(it is no longer our child), and reads its status. The shim is a few lines of
POSIX sh (`SH_SHIM`): a Python interpreter costs about 12 ms per attempt on a
small machine, sh well under 1 ms. Only an attempt whose log must have secrets
masked runs under the Python shim (`fleetdeck/shim.py`), which passes the
output through itself.

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
import shutil
import signal
import stat
import sys
import time
from typing import TYPE_CHECKING

from fleetdeck.executors.base import (
    AttemptProcess,
    Executor,
    HostLostError,
    LaunchError,
    LaunchRequest,
    Usage,
)
from fleetdeck.executors.common import (
    command_not_found,
    permission_denied,
    workdir_missing,
    write_all,
)
from fleetdeck.executors.pidwatch import PidfdWatch
from fleetdeck.executors.proctree import (
    TreeKill,
    direct_children,
    group_exists,
    is_own_child,
    is_zombie,
    process_start_time,
    process_table,
    same_process,
    trees,
)
from fleetdeck.model import LOCAL_HOST, STATUS_FILE, Attempt

# psutil only where an orphan is examined or a kernel without pidfds is polled
# (as in proctree): a run whose attempts exit cleanly never imports it.
if TYPE_CHECKING:
    import psutil

# The variable by which an adopted orphan is traced back to its attempt.
ATTEMPT_ID_VARIABLE = "FLEETDECK_ATTEMPT_ID"
_ATTEMPT_ID_KEY = ATTEMPT_ID_VARIABLE.encode()
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# How often the subreaper looks for adopted orphans while attempts run.
SWEEP_INTERVAL = 1.0
# The redacting shim runs as a script, not as `-m fleetdeck.shim`: importing the
# package would put site and the virtual environment's paths into its start-up.
SHIM_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "shim.py")
# The usual shim: $1 is the directory to run in (posix_spawn cannot change it),
# $2 the run's status file, $3 the attempt's id, the rest the command. The
# status is one append of a short line, a single write() (O_APPEND: lines of
# attempts ending together never mix), made after the command ended; readers
# take only whole lines, so none sees half of one. The file is private (umask
# 077 once the command has ended: the command keeps the umask it was given).
# sh reports a death by signal N as 128+N, like `exit 128+N`: see read_status().
SH_SHIM = (
    'cd -- "$1" || exit 126; s=$2; i=$3; shift 3; "$@"; c=$?; umask 077; '
    'printf "%s %d\\n" "$i" "$c" >> "$s"; exit "$c"'
)
# Python ignores these; an attempt gets the defaults back, as subprocess gives them.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
# Exit statuses from 129 to 192 read as deaths by signal 1 to 64.
_SIGNAL_STATUS = range(129, 193)
# How often to look at a reattached attempt where the kernel offers no pidfd.
_POLL_WITHOUT_PIDFD = 0.2


def shim_argv(
    cwd: str, status_path: str, attempt_id: int, argv: tuple[str, ...], redact: tuple[str, ...]
) -> list[str]:
    """The command line that runs `argv` in `cwd` under a shim (the Python one to
    redact) that records its status in `status_path` as attempt `attempt_id`'s."""
    where = [cwd, status_path, str(attempt_id)]
    if not redact:
        return ["/bin/sh", "-c", SH_SHIM, "fleetdeck-shim", *where, *argv]
    names = [item for name in redact for item in ("-r", name)]
    return [sys.executable, "-I", "-S", SHIM_PATH, *where, *names, "--", *argv]


def status_path_for(request: LaunchRequest) -> str:
    """Where the shim records `request`'s exit status: its run's status file, the
    directory of its log."""
    return request.status_path or os.path.join(os.path.dirname(request.log_path), STATUS_FILE)


def read_status(path: str, attempt_id: int) -> int | None:
    """The exit status a shim recorded in `path` for attempt `attempt_id`, or None
    when there is none.

    A file holding a single number is an attempt's own status file, as written
    before status files were shared. As on SSH hosts (where a shell reports
    too), a status from 129 to 192 is taken for a death by signal N - 128 and
    returned as -N: `exit 130` reads as -2, which is also what sh records when
    SIGINT killed the command.
    """
    try:
        with open(path, "rb") as handle:
            recorded = handle.read()
    except OSError:
        return None
    wanted = b"%d" % attempt_id
    code: int | None = None
    # Only whole lines count: a shim killed while writing left none.
    for line in recorded.split(b"\n")[:-1]:
        fields = line.split()
        try:
            if len(fields) == 2 and fields[0] == wanted:
                code = int(fields[1])
            elif len(fields) == 1:
                code = int(fields[0])
        except ValueError:
            continue
    return None if code is None else from_shell(code)


def from_shell(code: int) -> int:
    """An exit status as a shell reports it, with 129-192 read as death by signal."""
    return 128 - code if code in _SIGNAL_STATUS else code


class LocalProcess(AttemptProcess):
    """One local attempt's main process (its shim), plus what it leaves behind.

    `pid_started` stays None: reading a process's start time as it execs costs
    about half a millisecond here, and a restarted supervisor knows its attempts
    by the marks in their environment instead (see `LocalExecutor.recover`).
    """

    def __init__(
        self,
        pid: int,
        attempt_id: int,
        owner: LocalExecutor,
        status_path: str,
        output_path: str,
    ):
        self.pid = pid
        self._pid: int = pid
        self.attempt_id = attempt_id
        self._status_path = status_path
        self._output_path = output_path
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
            waiter = loop.run_in_executor(None, _reap, self._pid, 0)
            waiter.add_done_callback(lambda done: self._on_exit(done.result()[1]))
            return

        def readable() -> None:
            reaped, code = _reap(self._pid, os.WNOHANG)
            if not reaped:
                return  # not ended yet; pidfd stays readable, we will be called again
            exits.forget(pidfd)
            os.close(pidfd)
            self._on_exit(code)

        exits = self._owner._exits
        exits.watch(pidfd, readable)

    def _on_exit(self, code: int | None) -> None:
        # The shim exits with the command's status as a shell reports it. A shim
        # that was itself stopped (cancel, timeout, quit) did not, and may have
        # recorded the command's status first; so may one that someone else
        # reaped (code None), which is all we can know of it then.
        if code is not None and code >= 0:
            code = from_shell(code)
        elif self._kill is None:
            # Not our kill (one of ours reports the stop, whatever the command
            # recorded): read the run's status file, all of it.
            recorded = read_status(self._status_path, self.attempt_id)
            code = recorded if recorded is not None else code
        make_private(self._output_path)
        if not self._exited.done():
            if code is None:
                self._exited.set_exception(HostLostError("the attempt's exit status was lost"))
            else:
                self._exited.set_result(code)
        self._owner._attempt_exited(self)

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
            with contextlib.suppress(HostLostError):
                await self._exited
        finally:
            self._owner._attempt_stopped(self)

    @property
    def stopping(self) -> TreeKill | None:
        """The kill in progress, once stop() was called."""
        return self._kill


class ReattachedProcess(AttemptProcess):
    """A local attempt started by an earlier supervisor, whose shim still runs.

    It is not our child: we learn of its end through a pidfd (which, unlike
    waitpid, works for any process) and read the status its shim recorded.
    """

    def __init__(self, attempt: Attempt, owner: LocalExecutor) -> None:
        """Raises ProcessLookupError when the attempt's shim is gone."""
        assert attempt.pid is not None and attempt.pid_started is not None
        self.pid = attempt.pid
        self.pid_started = started = attempt.pid_started
        self.attempt_id = attempt.attempt_id
        self._stem = attempt.stem
        self._pid = attempt.pid
        self._status_path = attempt.status_path
        self._output_path = attempt.output_path
        self._owner = owner
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = loop.create_future()
        self._kill: TreeKill | None = None
        self._stopping: asyncio.Future[None] | None = None
        pidfd = -1
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(self._pid)
        # Checked after the pidfd is open: from then on the pid cannot be reused.
        if not same_process(self._pid, started):
            if pidfd >= 0:
                os.close(pidfd)
            raise ProcessLookupError(self._pid)
        if pidfd >= 0:

            def readable() -> None:
                owner._exits.forget(pidfd)
                os.close(pidfd)
                self._on_exit()

            owner._exits.watch(pidfd, readable)
        else:
            self._poll(loop)

    def _poll(self, loop: asyncio.AbstractEventLoop) -> None:
        import psutil

        try:
            running = psutil.Process(self._pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            running = False
        if running and self.pid_started and same_process(self._pid, self.pid_started):
            loop.call_later(_POLL_WITHOUT_PIDFD, self._poll, loop)
        else:
            self._on_exit()

    def _on_exit(self) -> None:
        make_private(self._output_path)
        if not self._exited.done():
            self._exited.set_result(None)
        self._owner._reattached_exited(self)

    async def wait(self) -> int:
        """The command's exit status as its shim recorded it.

        Raises HostLostError when the shim ended without recording one (it was
        killed by someone else than us): the attempt's fate is unknown.
        """
        await asyncio.shield(self._exited)
        code = _recorded_status(self._status_path, self._stem, self.attempt_id)
        if code is not None:
            return code
        if self._kill is not None:
            return -signal.SIGTERM  # we stopped it; the shim had no time to record
        raise HostLostError("the attempt's shim ended without recording an exit status")

    async def stop(self, grace: float) -> None:
        """Stop the whole tree, as for an attempt of our own."""
        if self._kill is None:
            self._kill = TreeKill(self._pid, pgid=self._pid, grace=grace)
            self._stopping = asyncio.ensure_future(self._terminate(self._kill))
            self._owner._track(self._kill, self._stopping)
        else:
            self._kill.hurry(grace)
        assert self._stopping is not None
        await asyncio.shield(self._stopping)

    async def _terminate(self, kill: TreeKill) -> None:
        await kill.run()
        await self._exited


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
        self._reattached: dict[int, ReattachedProcess] = {}  # attempt id -> process
        # Commands found on PATH, by (name, PATH): looked up once, not per attempt.
        self._found: set[tuple[str, str]] = set()
        # One /dev/null for every attempt's stdin.
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        # The pidfds of the processes we wait for, ours and reattached ones.
        self._exits = PidfdWatch()
        _keep_descriptors_to_ourselves()
        self._status_files: set[str] = set()

    async def start(self, request: LaunchRequest) -> LocalProcess:
        """Start `request` as a local process. Raises LaunchError."""
        # An environment encoded once: encoding every variable for every process
        # would cost more than the rest of this method.
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
        # The shim runs the command and reports an exec failure only in the log:
        # find out now, so that the operator gets a launch error naming it.
        self._check_command(request)
        status_path = status_path_for(request)
        try:
            self._create_status_file(status_path)
            log_fd = os.open(
                request.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise LaunchError(f"cannot open {exc.filename}: {exc.strerror}") from None
        argv = shim_argv(
            request.cwd or ".", status_path, request.attempt_id, request.argv, request.redact
        )
        try:
            # Blocking on purpose, and in a coroutine: posix_spawn returns once the
            # shim is exec'd, in a fraction of a millisecond.
            pid = os.posix_spawn(  # noqa: ASYNC221
                argv[0],
                argv,
                env,
                file_actions=(
                    (os.POSIX_SPAWN_DUP2, self._devnull, 0),
                    (os.POSIX_SPAWN_DUP2, log_fd, 1),
                    (os.POSIX_SPAWN_DUP2, log_fd, 2),
                ),
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
            )
        except OSError as exc:
            raise LaunchError(f"cannot start the shim {argv[0]!r}: {exc.strerror}") from None
        finally:
            os.close(log_fd)
        process = LocalProcess(pid, request.attempt_id, self, status_path, request.output_path)
        self._live[process._pid] = process
        self._attempt_of[request.attempt_id] = process
        if self._adopt and self._sweeper is None:
            self._schedule_sweep()
        return process

    def _create_status_file(self, path: str) -> None:
        """Create a run's status file, private, before its first shim appends to it."""
        if path not in self._status_files:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))
            self._status_files.add(path)

    def _check_command(self, request: LaunchRequest) -> None:
        """Raise LaunchError when the workdir or the command is not there."""
        cwd = request.cwd
        if cwd is not None and not os.path.isdir(cwd):
            raise LaunchError(workdir_missing(cwd))
        command = request.argv[0]
        if "/" in command:
            path = command if cwd is None else os.path.join(cwd, command)
            if not os.path.exists(path):
                raise LaunchError(command_not_found(command))
            if os.path.isdir(path) or not os.access(path, os.X_OK):
                raise LaunchError(permission_denied(command))
            return
        search = request.env.get("PATH") or os.environ.get("PATH", os.defpath)
        if (command, search) in self._found:
            return
        if shutil.which(command, path=search) is None:
            raise LaunchError(command_not_found(command))
        self._found.add((command, search))

    async def recover(self, attempt: Attempt) -> AttemptProcess | int | None:
        """An attempt of an earlier supervisor: its shim if it still runs, else the
        status its shim recorded, else None (lost).

        The process with the journaled pid is the attempt's shim if it leads its
        own group and carries the attempt's marks in its environment (or, for a
        start time journaled by an older fleetdeck, if it started then). An
        attempt journaled without a pid (its supervisor died while starting it)
        is looked for by those marks alone."""
        if attempt.pid is None:
            found = find_shim(attempt.attempt_id, attempt.output_path)
            if found is not None:
                attempt.pid, attempt.pid_started = found
        elif attempt.pid_started is None:
            attempt.pid_started = shim_started(
                attempt.pid, _marks(attempt.attempt_id, attempt.output_path)
            )
        # A shim that ended (a zombie its new parent has not reaped yet) is not
        # reattached: its recorded status is all there is to know.
        if (
            attempt.pid is not None
            and attempt.pid_started is not None
            and not is_zombie(attempt.pid)
        ):
            try:
                process = ReattachedProcess(attempt, self)
            except ProcessLookupError:
                pass
            else:
                self._reattached[attempt.attempt_id] = process
                return process
        # Read after the liveness check: a shim records its status before it exits.
        status = _recorded_status(attempt.status_path, attempt.stem, attempt.attempt_id)
        if attempt.pid is not None:
            # The shim is gone; what it started may not be (someone killed the
            # shim alone). Stop it before anything runs the task again.
            remains = [
                proc
                for proc in process_table()
                if proc.pgid == attempt.pid and _carries(proc.pid, attempt.attempt_id)
            ]
            if remains:
                await TreeKill(remains[0].pid, pgid=attempt.pid, grace=self._grace).run()
        make_private(attempt.output_path)
        return status

    def _reattached_exited(self, process: ReattachedProcess) -> None:
        self._reattached.pop(process.attempt_id, None)
        if process._kill is None and group_exists(process._pid):
            # What the command left running in its group goes with it, as for ours.
            self._spawn_cleanup(process._pid, process._pid, [])

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
        for attempt_id, reattached in self._reattached.items():
            roots[attempt_id] = [reattached._pid]
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
        # Orphans it left that were not found yet are found by the next sweep
        # (within SWEEP_INTERVAL), which stops them since their attempt is over:
        # a sweep here, at every exit, was 3% of a run of short tasks.
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
            if pid in self._live or pid in self._foreign or is_own_child(pid):
                continue
            if any(pid in group for group in self._adopted.values()):
                self._reap_if_dead(pid)
                continue
            self._classify(pid)

    def _classify(self, pid: int) -> None:
        import psutil

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
        self._exits.close()
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1


def _carries(pid: int, attempt_id: int) -> bool:
    """True when process `pid` carries attempt `attempt_id`'s mark in its environment."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = b"\0" + handle.read()
    except OSError:
        return False
    return b"\0" + _ATTEMPT_ID_KEY + b"=%d\0" % attempt_id in environ


def _keep_descriptors_to_ourselves() -> None:
    """Make every inheritable descriptor of this process above stderr close on exec.

    posix_spawn, unlike subprocess's close_fds, passes on whatever is inheritable,
    and what fleetdeck opens itself never is (PEP 446); but a descriptor it was
    started with (a make jobserver's pipe, a parent's extra pipe) would reach every
    attempt and every daemon an attempt leaves behind, and whoever waits for that
    pipe's end would wait for them all.
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor is gone
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)


def _marks(attempt_id: int, output_path: str) -> tuple[bytes, bytes]:
    """What an attempt's environment holds that no other process's does: its id
    and its output file (the id alone is only unique within one journal)."""
    return (
        b"\0" + _ATTEMPT_ID_KEY + b"=%d\0" % attempt_id,
        b"\0FLEETDECK_OUTPUT=" + os.fsencode(output_path) + b"\0",
    )


def shim_started(pid: int, marks: tuple[bytes, bytes]) -> float | None:
    """The start time of process `pid` if it is an attempt's shim: a group leader
    carrying `marks` in its environment. None when it is not (or is gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = b"\0" + handle.read()
        if not all(mark in environ for mark in marks) or os.getpgid(pid) != pid:
            return None
    except OSError:
        return None  # gone, or not ours to read
    return process_start_time(pid)


def find_shim(attempt_id: int, output_path: str) -> tuple[int, float] | None:
    """The pid and start time of the shim of attempt `attempt_id`, if it runs."""
    marks = _marks(attempt_id, output_path)
    for name in os.listdir("/proc"):
        if name.isdigit():
            started = shim_started(int(name), marks)
            if started is not None:
                return int(name), started
    return None


def _recorded_status(status_path: str, stem: str, attempt_id: int) -> int | None:
    """The status recorded for an attempt: in its run's status file, or in a file
    of its own (`STEM.status`, as fleetdeck wrote them before)."""
    code = read_status(status_path, attempt_id)
    if code is None:
        code = read_status(stem + ".status", attempt_id)
    return code


def _reap(pid: int, options: int) -> tuple[bool, int | None]:
    """waitpid(pid, options): (whether it ended, its exit code). A child someone
    else reaped reads as ended with no code."""
    try:
        reaped, status = os.waitpid(pid, options)
    except ChildProcessError:
        return True, None
    return (True, os.waitstatus_to_exitcode(status)) if reaped else (False, None)


def make_private(path: str) -> None:
    """Make the regular file at `path` readable by its owner only, if it is there.

    An attempt creates its output file itself, with its own umask. Never through
    a symlink (an attempt could point its output anywhere, and we may be root)
    and never blocking on a FIFO.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_private(path: str, data: bytes) -> None:
    """Write `data` to a new or truncated file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
