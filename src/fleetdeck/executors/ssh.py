"""SSH hosts: attempts run as channels of one asyncssh connection per host.

Connection. `open()` starts a background task that connects, reports the host
UP, refreshes its latency and load (`cat /proc/loadavg`, timed) every
keepalive interval, and reconnects with exponential backoff when the connection
is lost. Transient trouble (refused, unreachable, no answer) is reported DOWN
and retried; trouble that retrying cannot fix (host key unknown or changed,
authentication refused, unusable identity file) is reported FAILED once and
the host is left alone for the rest of the run. Whether the host is gone is
asyncssh's keepalive's call alone: it closes a connection whose host stops
answering after about keepalive_interval x keepalive_count seconds; the host is
then DOWN and every attempt running there ends with HostLostError (outcome
`lost`: the engine reruns it elsewhere). A health check that is refused (every
session the host allows is in use) or slow only leaves the numbers stale.

Host keys are always verified against known_hosts. An unknown key is refused
unless the host opts in with `trust_unknown_host_key`, and then it is pinned for
the run; a key that differs from known_hosts is refused in every case.

Attempts. Each attempt is one exec channel running the wrapper (wrapper.sh
beside this file, a POSIX sh script: no Python needed on the host; it documents
the protocol). We cannot rely on the channel to kill anything: OpenSSH ignores
signal requests from root sessions, and closing a channel without a pty kills
nothing. So the wrapper owns the attempt's life:

- Its command line holds only the attempt's random token and a few numbers:
  every user of the host can read command lines. The command, its environment
  (API keys), the workdir, the inputs and a CI attempt's copy of the agent's
  output come on its stdin, which it reads into a private temp dir; the
  command then starts in its own session with the worker's variables, then
  fleetdeck's own (FLEETDECK_INPUTS, FLEETDECK_OUTPUT... pointing into that
  dir), and FLEETDECK_ATTEMPT_MARK=<token>, inherited by all it starts.
- Later lines of stdin are heartbeats and stop requests; the end of stdin is a
  stop too. A stop sends SIGTERM to every process of the attempt, then SIGKILL
  after the grace, and looks again until nothing is left. "Every process" is
  found in /proc: processes carrying the token (even after a double fork and
  setsid), the leader's session and group, and all their descendants.
- After a network partition, sshd does not notice the connection is gone for
  hours; the attempt would go on while fleetdeck reruns it elsewhere. So
  fleetdeck sends a heartbeat every keepalive interval, and the wrapper stops
  the attempt once a few more intervals than fleetdeck's own patience passed
  without one. And when fleetdeck connects to a host again, it first stops
  whatever still carries the token of an attempt lost there.
- When the command ends, the wrapper reports its exit status and the output
  file's size and bytes at once (on the channel's stderr, our protocol channel:
  the attempt's own stderr is merged into stdout, which streams into the
  attempt's log), and only then stops what the command left running. wait()
  returns as soon as all of that arrived; the channel, and the session it
  takes from max_sessions, lasts until the leftovers are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import re
import secrets
import shlex
import signal as signals
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import asyncssh

from fleetdeck.config import HostSpec
from fleetdeck.executors.base import (
    AttemptProcess,
    Executor,
    HealthListener,
    HostHealth,
    HostLostError,
    HostState,
    LaunchError,
    LaunchRequest,
)
from fleetdeck.executors.common import (
    command_not_found,
    open_log,
    permission_denied,
    workdir_missing,
    write_all,
)

# Reconnection backoff: first retry after this, doubling up to the cap, with jitter.
RECONNECT_FIRST = 1.0
RECONNECT_MAX = 30.0
# A CI attempt's path to its agent's output: a file on this machine, which the
# wrapper re-creates on the host (the variable then names the host's copy).
AGENT_OUTPUT_VARIABLE = "FLEETDECK_AGENT_OUTPUT"
# Heartbeat intervals the wrapper waits beyond the time fleetdeck takes to give
# up on a silent host, before it stops the attempt: fleetdeck must have called
# the attempt lost first, or a slow network would turn into failed attempts.
HEARTBEAT_SLACK = 2
# Exit statuses above this are deaths by signal (status - 128), as sh reports them.
_SIGNAL_BASE = 128
_MAX_SIGNAL = 64
# What `export NAME=...` accepts in sh.
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _wrapper_script() -> str:
    """wrapper.sh without its comment and blank lines (it travels on every exec)."""
    source = resources.files("fleetdeck.executors").joinpath("wrapper.sh").read_text()
    return "\n".join(
        line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )


WRAPPER = _wrapper_script()


def _hundredths(seconds: float) -> int:
    """A grace as the wrapper counts it: hundredths of a second, /proc/uptime's unit."""
    return max(0, round(seconds * 100))


def remote_command(*, token: str, grace: float, heartbeat: float, misses: int) -> str:
    """The exec command of one attempt: the wrapper with only small, fixed parameters.

    The login shell runs it, so it starts by handing over to /bin/sh: what
    follows is POSIX whatever the user's shell is. The attempt itself goes to
    the wrapper's stdin (`attempt_setup`).
    """
    params = f"attempt {token} {_hundredths(grace)} {heartbeat:g} {misses}"
    return f"exec /bin/sh -c {shlex.quote(WRAPPER)} fleetdeck {params}"


def reap_command(tokens: Iterable[str], *, grace: float) -> str:
    """The command that stops every process carrying one of `tokens` (hex strings)."""
    return f"exec /bin/sh -c {shlex.quote(WRAPPER)} fleetdeck reap {_hundredths(grace)} " + (
        " ".join(tokens)
    )


def _encode(text: str) -> bytes:
    # surrogateescape: strings that came from file names hold undecodable bytes so.
    return text.encode("utf-8", "surrogateescape")


def attempt_setup(
    *,
    argv: tuple[str, ...],
    env: Mapping[str, str],
    cwd: str | None,
    inputs: Mapping[str, str],
    agent_output: bytes | None = None,
) -> bytes:
    """What the wrapper reads on its stdin before it starts the command (see wrapper.sh).

    The variables and the argv are sh, every value quoted on its own by shlex,
    so the wrapper's shell takes them literally; each line is escaped for
    printf %b so that no value's newline can end it. The command's name and the
    worker's PATH also go as they are, for the wrapper to check that the command
    exists without sourcing anything. `env` must hold only names sh accepts, and
    neither argv[0] nor PATH a newline.
    """
    lines: list[bytes] = []
    if cwd:
        lines.append(b"cwd " + printf_escape(_encode(cwd)))
    if inputs:
        lines.append(b"inputs " + printf_escape(json.dumps(dict(inputs)).encode()))
    if agent_output is not None:
        lines.append(b"agent-output " + printf_escape(agent_output))
    for name, value in env.items():
        lines.append(b"env " + printf_escape(_encode(f"export {name}={shlex.quote(value)}")))
    command = " ".join(shlex.quote(arg) for arg in argv)
    lines.append(b"argv " + printf_escape(_encode(f"set -- {command}")))
    lines.append(b"command " + _encode(argv[0]))
    if "PATH" in env:
        lines.append(b"path " + _encode(env["PATH"]))
    lines.append(b"go")
    return b"\n".join(lines) + b"\n"


def printf_escape(data: bytes) -> bytes:
    """`data` as one line that sh's `printf '%b'` turns back into `data`."""
    return data.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\0", b"\\0000")


def exit_status(raw: int) -> int:
    """The wrapper's status as the local executor reports it: -N for signal N.

    sh reports a death by signal N as 128+N, the same as `exit 128+N`: both
    come out as -N (see AttemptProcess.wait).
    """
    if _SIGNAL_BASE < raw <= _SIGNAL_BASE + _MAX_SIGNAL:
        return _SIGNAL_BASE - raw
    return raw


def resolve_path(path: str, base_dir: Path) -> Path:
    """`~` expanded, relative paths taken from the config file's directory."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else base_dir / expanded


class _Permanent(Exception):
    """Connecting cannot succeed this run: the host is FAILED."""


class _Transient(Exception):
    """Connecting failed for now: the host is DOWN and we try again."""


class RemoteProcess(AttemptProcess):
    """One attempt on an SSH host: an exec channel running the wrapper."""

    def __init__(
        self,
        executor: SshExecutor,
        request: LaunchRequest,
        *,
        log_fd: int,
        setup: bytes,
        heartbeat: float,
    ) -> None:
        self._executor = executor
        self._request = request
        self._token = secrets.token_hex(16)
        # What the wrapper writes on stdout after the command's own output.
        self._end_mark = b"\0" + self._token.encode() + b"\0"
        self._setup = setup
        self._heartbeat_interval = heartbeat
        self._log_fd = log_fd
        self._out_fd = -1
        self._output_left = 0  # bytes of the output file still to come
        self._control = bytearray()
        self._held = b""  # stdout bytes that may be the start of the end mark
        self._log_complete = False
        self._status: int | None = None
        self._lost: str | None = None
        self._channel: asyncssh.SSHClientChannel[bytes] | None = None
        # What to send once the channel is there (a stop asked for before).
        self._pending = bytearray()
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[None] = loop.create_future()
        self._exited: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._stop_deadline: float | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._killed = False
        self._heartbeat: asyncio.TimerHandle | None = None
        self._heartbeats_paused = False
        self._release_session: Callable[[], None] | None = None
        self._launch_failed = False
        self._last_stray = ""
        # True when the channel ended without the wrapper ending: it may still
        # run on the host (see SshExecutor._reap).
        self.orphaned = False

    @property
    def token(self) -> str:
        """The random mark every process of this attempt carries on the host."""
        return self._token

    @property
    def attached(self) -> bool:
        """True once the channel is open (the wrapper may be running)."""
        return self._channel is not None

    @property
    def ended(self) -> bool:
        """True once the channel is closed (ended, or lost with its host)."""
        return self._closed.done()

    def hold_session(self, release: Callable[[], None]) -> None:
        """Keep one of the host's sessions (max_sessions) until the channel closes;
        `release` gives it back."""
        if self._closed.done():
            release()
        else:
            self._release_session = release

    def pause_heartbeats(self) -> None:
        """Stop sending heartbeats while the channel stays open: what a network
        partition looks like to the host. For tests."""
        self._heartbeats_paused = True

    # --- from the channel ------------------------------------------------------

    def attach(self, channel: asyncssh.SSHClientChannel[bytes]) -> None:
        """Tie this attempt to its (open) channel: send the attempt, then what
        was asked for meanwhile, and start the heartbeat."""
        self._channel = channel
        self._send(self._setup)
        if self._pending:
            self._send(bytes(self._pending))
            self._pending.clear()
        self._heartbeat = asyncio.get_running_loop().call_later(
            self._heartbeat_interval, self._beat
        )

    def _beat(self) -> None:
        if self._closed.done():
            return
        if not self._heartbeats_paused:
            self._send(b"ping\n")
        self._heartbeat = asyncio.get_running_loop().call_later(
            self._heartbeat_interval, self._beat
        )

    def on_stdout(self, data: bytes) -> None:
        """Output of the attempt (stdout and stderr): into its log, without the
        wrapper's end mark, whose arrival says the log is complete."""
        if self._log_complete:
            self._log(data)
            return
        if self._held:
            data = self._held + data
        at = data.find(self._end_mark)
        if at >= 0:
            self._held = b""
            self._log(data[:at])
            self._log(data[at + len(self._end_mark) :])  # leftovers still printing
            self._log_complete = True
            self._check_exited()
            return
        keep = _mark_start_at_end(data, self._end_mark)
        if keep:
            self._held = data[-keep:]
            data = data[:-keep]
        self._log(data)

    def _log(self, data: bytes) -> None:
        if self._log_fd >= 0 and data:
            write_all(self._log_fd, data)

    def on_control(self, data: bytes) -> None:
        """The wrapper's protocol lines, and after `exit` the output file's bytes."""
        if self._closed.done():
            return  # abandoned: the connection is being torn down
        self._control += data
        prefix = self._token.encode() + b" "
        while self._control:
            if self._output_left:
                chunk = bytes(self._control[: self._output_left])
                del self._control[: len(chunk)]
                write_all(self._out_fd, chunk)
                self._output_left -= len(chunk)
                if not self._output_left:
                    self._output_arrived()
                continue
            end = self._control.find(b"\n")
            if end < 0:
                return
            line = bytes(self._control[:end])
            del self._control[: end + 1]
            if not line.startswith(prefix):
                # Not the wrapper's (a login script writing to stderr): keep it
                # in the log, where the operator will look.
                self._log(line + b"\n")
                self._last_stray = line.decode(errors="replace").strip()
                continue
            self._on_message(line[len(prefix) :].decode(errors="replace").split())

    def _on_message(self, words: list[str]) -> None:
        match words:
            case ["started", pid] if pid.isdigit():
                self.pid = int(pid)
                if not self.started.done():
                    self.started.set_result(None)
            case ["error", code]:
                self._launch_failed = True
                if not self.started.done():
                    self.started.set_exception(LaunchError(self._launch_message(code)))
            case ["lost"]:
                if not self._exited.done():
                    self._lost = (
                        f"{self._executor.host}: the host heard no heartbeat from fleetdeck "
                        "for too long and stopped the attempt"
                    )
            case ["exit", status, size] if status.isdigit() and (size.isdigit() or size == "-"):
                self._status = exit_status(int(status))
                if size != "-":
                    self._out_fd = _open_output(self._request.output_path)
                    self._output_left = int(size)
                    if not self._output_left:
                        self._output_arrived()
                self._check_exited()
            case _:
                pass  # a newer wrapper's message: nothing we need

    def _output_arrived(self) -> None:
        os.close(self._out_fd)
        self._out_fd = -1
        self._check_exited()

    def _check_exited(self) -> None:
        """wait() returns once the status, the whole output file and the whole log are here."""
        if (
            self._status is not None
            and not self._output_left
            and self._log_complete
            and not self._exited.done()
        ):
            self._exited.set_result(None)

    def _launch_message(self, code: str) -> str:
        host = self._executor.host
        request = self._request
        if code == "workdir":
            return f"{host}: {workdir_missing(request.cwd or '')}"
        if code == "notfound":
            return f"{host}: {command_not_found(request.argv[0])}"
        if code == "noexec":
            return f"{host}: {permission_denied(request.argv[0])}"
        if code == "tmp":
            return f"{host}: cannot create a temporary directory (is /tmp full or read-only?)"
        if code == "noproc":
            return (
                f"{host}: the host has no /proc: fleetdeck runs attempts on Linux hosts only "
                "(it finds an attempt's processes there)"
            )
        return f"{host}: cannot start the attempt ({code})"

    def on_closed(self, exc: Exception | None, exit_code: int | None) -> None:
        """The channel is gone: the attempt ended, or its host was lost.

        `exit_code` is what sshd reported for the wrapper; None when the channel
        ended without one: the connection closed under it, cleanly or not, and
        the wrapper may still be running.
        """
        if self._closed.done():
            return
        self._log(self._held)
        self._held = b""
        self.orphaned = self.attached and exit_code is None
        if not self._exited.done():
            if self._lost is None and self._status is not None and not self._output_left:
                pass  # all that counts arrived; at most the end of the log is missing
            elif self._lost is None and self._status is None and exit_code is not None:
                self._ended_without_report(exit_code)
            elif self._lost is None:
                why = f"connection lost ({exc})" if exc is not None else "connection closed"
                self._lost = f"{self._executor.host}: {why}"
            self._exited.set_result(None)
        if not self.started.done():
            self.started.set_result(None)  # lost: wait() says so
        for fd in (self._log_fd, self._out_fd):
            if fd >= 0:
                os.close(fd)
        self._log_fd = self._out_fd = -1
        for timer in (self._kill_timer, self._heartbeat):
            if timer is not None:
                timer.cancel()
        self._closed.set_result(None)
        release, self._release_session = self._release_session, None
        if release is not None:
            release()
        self._executor._attempt_closed(self)

    def _ended_without_report(self, exit_code: int) -> None:
        """The wrapper ended without reporting (killed on the host, or the login
        shell could not run it): its status is what sshd says."""
        self._status = exit_code
        if not self.started.done():
            tail = self._control.decode(errors="replace").strip() or self._last_stray
            detail = f": {tail}" if tail else ""
            self.started.set_exception(
                LaunchError(
                    f"{self._executor.host}: the remote wrapper did not start "
                    f"(exit status {exit_code}){detail}"
                )
            )
        elif not self._launch_failed:
            note = f"fleetdeck: the remote wrapper ended without a status ({exit_code})\n"
            self._log(note.encode())

    # --- AttemptProcess ---------------------------------------------------------

    async def wait(self) -> int:
        """The exit status of the command; HostLostError if its host went away.

        Returns as soon as the status and the command's output are here, while
        the wrapper may still be stopping what the command left running.
        """
        await asyncio.shield(self._exited)
        if self._lost is not None:
            raise HostLostError(self._lost)
        assert self._status is not None
        return self._status

    async def stop(self, grace: float) -> None:
        """Ask the wrapper to stop the whole tree; return once the channel closed.

        A second call with a shorter grace brings the SIGKILL forward. Asked
        before the channel is open, the stop is sent right after the attempt.
        """
        if self._closed.done():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._stop_deadline is None:
            self._stop_deadline = deadline
            self._send(f"stop {_hundredths(grace)}\n".encode())
        elif deadline < self._stop_deadline:
            self._stop_deadline = deadline
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            self._kill_timer = loop.call_at(deadline, self.hurry)
        await asyncio.shield(self._closed)

    def hurry(self) -> None:
        """Skip what is left of the grace of a stop, or of the cleanup of what
        the command left running."""
        if (self._stop_deadline is not None or self._exited.done()) and not self._killed:
            self._killed = True
            self._send(b"kill\n")

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self._stop_deadline is not None

    def _send(self, data: bytes) -> None:
        if self._closed.done():
            return
        channel = self._channel
        if channel is None:
            self._pending += data
            return
        # The channel may be closing under us (host lost): nothing left to tell.
        with contextlib.suppress(OSError, asyncssh.Error):
            channel.write(data)

    def abandon(self, reason: str) -> None:
        """Give up on the attempt (never started, or its connection is gone): it is lost."""
        if not self._closed.done():
            if not self._exited.done() and self._lost is None:
                self._lost = f"{self._executor.host}: {reason}"
            self.on_closed(None, None)


def _mark_start_at_end(data: bytes, mark: bytes) -> int:
    """How many bytes at the end of `data` could be the start of `mark` (which
    starts with a NUL): they wait for the next chunk before they go to the log."""
    at = data.find(b"\0", max(0, len(data) - len(mark) + 1))
    while at >= 0:
        if mark.startswith(data[at:]):
            return len(data) - at
        at = data.find(b"\0", at + 1)
    return 0


def _open_output(path: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError:
        # Nowhere to put it (the state dir vanished?): take the bytes off the wire anyway.
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


class _Session(asyncssh.SSHClientSession[bytes]):
    """Routes one channel's events to its RemoteProcess."""

    def __init__(self, process: RemoteProcess) -> None:
        self._process = process
        self._exit_code: int | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self._process.on_control(data)
        else:
            self._process.on_stdout(data)

    def exit_status_received(self, status: int) -> None:
        self._exit_code = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._exit_code = -_signal_number(signal)

    def connection_lost(self, exc: Exception | None) -> None:
        self._process.on_closed(exc, self._exit_code)


def _signal_number(name: str) -> int:
    try:
        return int(signals.Signals[f"SIG{name}"])
    except KeyError:
        return int(signals.SIGKILL)


class _Client(asyncssh.SSHClient):
    """Host key decisions and connection loss, for one SshExecutor."""

    def __init__(self, executor: SshExecutor) -> None:
        self._executor = executor
        self._conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        # Called only for a key that known_hosts does not list for this host.
        return self._executor._judge_host_key(addr, port, key)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._executor._connection_lost(self._conn, exc)


class SshExecutor(Executor):
    """Runs attempts on one `[hosts.NAME]` over a single SSH connection."""

    def __init__(self, name: str, spec: HostSpec, *, grace: float, base_dir: Path) -> None:
        """`grace`: how long leftovers of an attempt get after SIGTERM; `base_dir`:
        the directory relative `identity` and `known_hosts` paths start from."""
        self.host = name
        self._spec = spec
        self._grace = grace
        self._identity = resolve_path(spec.identity, base_dir) if spec.identity else None
        self._known_hosts = resolve_path(spec.known_hosts or "~/.ssh/known_hosts", base_dir)
        self._listener: HealthListener | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._keeper: asyncio.Task[None] | None = None
        # The host's sessions (max_sessions): each attempt holds one from before
        # its channel opens until it closes (RemoteProcess.hold_session).
        self._sessions: asyncio.Semaphore | None = None
        self._attempts: set[RemoteProcess] = set()
        # Tokens of attempts whose channel went with a connection: they may
        # still run there, to be stopped when we connect again.
        self._lost_tokens: set[str] = set()
        self._closing = False
        # With trust_unknown_host_key: the key accepted at the first connection,
        # the only one accepted from then on this run.
        self._pinned_key: asyncssh.SSHKey | None = None
        self._key_verdict: str | None = None
        self._rng = random.Random()

    @property
    def destination(self) -> str:
        """`user@address:port`, for messages."""
        user = f"{self._spec.user}@" if self._spec.user else ""
        return f"{user}{self._spec.address}:{self._spec.port}"

    @property
    def heartbeat_misses(self) -> int:
        """Heartbeat intervals without one after which the host stops an attempt.

        asyncssh closes a silent connection after max(2, keepalive_count)
        intervals (see _connect); the wrapper waits HEARTBEAT_SLACK more.
        """
        return max(2, self._spec.keepalive_count) + HEARTBEAT_SLACK

    # --- health and connection --------------------------------------------------

    async def open(self, on_health: HealthListener) -> None:
        """Start connecting in the background; health changes go to `on_health`."""
        self._listener = on_health
        self._sessions = asyncio.Semaphore(self._spec.max_sessions)
        self._keeper = asyncio.get_running_loop().create_task(self._keep_connected())

    def _report(
        self,
        state: HostState,
        *,
        reason: str | None = None,
        latency: float | None = None,
        load: tuple[float, float, float] | None = None,
    ) -> None:
        health = HostHealth(self.host, state, latency=latency, load=load, reason=reason)
        if self._listener is not None and not self._closing:
            self._listener(health)

    async def _keep_connected(self) -> None:
        delay = RECONNECT_FIRST
        while not self._closing:
            try:
                conn = await self._connect()
            except _Permanent as exc:
                self._report(HostState.FAILED, reason=str(exc))
                return
            except Exception as exc:
                # Anything unforeseen is treated as transient: retrying is the
                # safe side, and the reason tells the operator what happened.
                message = (
                    str(exc) if isinstance(exc, _Transient) else f"{type(exc).__name__}: {exc}"
                )
                self._report(HostState.DOWN, reason=f"{message}; retrying")
                # Jitter, so hosts that went down together are not retried in step.
                await asyncio.sleep(delay * self._rng.uniform(0.75, 1.25))
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            self._conn = conn
            try:
                await self._reap(conn)
                if await self._watch(conn):
                    delay = RECONNECT_FIRST
            finally:
                if self._conn is conn:
                    self._connection_lost(conn, None)
                conn.close()
                await conn.wait_closed()
            if not self._closing:
                await asyncio.sleep(delay * self._rng.uniform(0.75, 1.25))
                delay = min(delay * 2, RECONNECT_MAX)

    async def _connect(self) -> asyncssh.SSHClientConnection:
        spec = self._spec
        options: dict[str, Any] = {}
        if self._identity is not None:
            options["client_keys"] = [self._load_identity(self._identity)]
            # Like OpenSSH's IdentitiesOnly: a named identity is the only one tried.
            options["agent_path"] = None
        known_hosts: str | bytes = str(self._known_hosts) if self._known_hosts.is_file() else b""
        self._key_verdict = None
        try:
            return await asyncssh.connect(
                spec.address,
                spec.port,
                username=spec.user or (),
                known_hosts=known_hosts,
                # The fleet file is the whole configuration: ~/.ssh/config does not apply.
                config=None,
                connect_timeout=spec.connect_timeout,
                keepalive_interval=spec.keepalive_interval,
                # asyncssh gives up after count_max + 1 silent intervals; OpenSSH
                # (and the config's meaning) after keepalive_count of them.
                keepalive_count_max=max(1, spec.keepalive_count - 1),
                client_factory=lambda: _Client(self),
                **options,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise _Permanent(self._host_key_message(exc)) from None
        except asyncssh.PermissionDenied:
            via = (
                f"identity {self._identity}" if self._identity else "the SSH agent and default keys"
            )
            raise _Permanent(
                f"authentication failed for {self.destination} with {via}; "
                f"check user and identity in [hosts.{self.host}]"
            ) from None
        except TimeoutError:
            raise _Transient(
                f"no answer from {spec.address}:{spec.port} within {spec.connect_timeout:g}s"
            ) from None
        except ConnectionRefusedError:
            raise _Transient(
                f"connection refused by {spec.address}:{spec.port} (is sshd listening there?)"
            ) from None
        except socket.gaierror as exc:
            raise _Transient(f"cannot resolve {spec.address}: {exc.strerror}") from None
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise _Transient(f"{spec.address} is unreachable: {exc.strerror}") from None
            raise _Transient(f"cannot connect to {spec.address}:{spec.port}: {exc}") from None
        except asyncssh.Error as exc:
            raise _Transient(f"SSH with {spec.address}:{spec.port} failed: {exc.reason}") from None

    def _load_identity(self, path: Path) -> asyncssh.SSHKey:
        passphrase_hint = (
            f"identity file {path} is protected by a passphrase: load it into ssh-agent "
            f"and leave identity unset in [hosts.{self.host}]"
        )
        try:
            return asyncssh.read_private_key(str(path))
        except FileNotFoundError:
            raise _Permanent(f"identity file {path} does not exist") from None
        except OSError as exc:
            raise _Permanent(f"cannot read identity file {path}: {exc.strerror}") from None
        except asyncssh.KeyEncryptionError:
            raise _Permanent(passphrase_hint) from None
        except (asyncssh.KeyImportError, ValueError) as exc:
            # asyncssh says "Passphrase must be specified to import encrypted
            # private keys" for an encrypted key we gave no passphrase for.
            if "passphrase" in str(exc).lower():
                raise _Permanent(passphrase_hint) from None
            raise _Permanent(f"identity file {path} is not a usable private key: {exc}") from None

    def _judge_host_key(self, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        """A key known_hosts does not list: accept it only as trust_unknown allows."""
        spec = self._spec
        listed: list[Any] = []
        if self._known_hosts.is_file():
            with contextlib.suppress(OSError, ValueError, asyncssh.Error):
                listed = list(
                    asyncssh.match_known_hosts(
                        str(self._known_hosts),
                        spec.address,
                        addr,
                        None if port == 22 else port,
                    )[0]
                )
        fingerprint = key.get_fingerprint()
        if listed:
            self._key_verdict = f"changed:{fingerprint}"
            return False
        if not spec.trust_unknown_host_key:
            self._key_verdict = f"unknown:{fingerprint}"
            return False
        if self._pinned_key is None:
            self._pinned_key = key
            return True
        if self._pinned_key == key:
            return True
        self._key_verdict = f"repinned:{fingerprint}"
        return False

    def _host_key_message(self, exc: asyncssh.HostKeyNotVerifiable) -> str:
        spec = self._spec
        verdict, _, fingerprint = (self._key_verdict or "").partition(":")
        where = f"host {self.host} ({spec.address}:{spec.port})"
        known = self._known_hosts
        keyscan = "ssh-keyscan " + (f"-p {spec.port} " if spec.port != 22 else "")
        name = spec.address if spec.port == 22 else f"[{spec.address}]:{spec.port}"
        if verdict == "unknown":
            return (
                f"{where}: unknown host key {fingerprint}, not in {known}; refusing to connect. "
                f"If that is the host's key, add it with: {keyscan}{spec.address} >> {known}, "
                f"or set trust_unknown_host_key = true in [hosts.{self.host}]"
            )
        if verdict == "changed":
            return (
                f"{where}: HOST KEY CHANGED: it offered {fingerprint}, which does not match "
                f"{known} (the host was reinstalled, or someone is in the middle); refusing "
                f"to connect. If the change is expected: ssh-keygen -R '{name}' -f {known}, "
                f"then add the new key with: {keyscan}{spec.address} >> {known}"
            )
        if verdict == "repinned":
            return (
                f"{where}: host key changed during the run (now {fingerprint}); refusing to "
                "connect again"
            )
        return f"{where}: host key not accepted: {exc.reason}"

    async def _reap(self, conn: asyncssh.SSHClientConnection) -> None:
        """Stop what attempts lost with an earlier connection left on the host.

        Their wrappers stop them once heartbeats have been missing long enough,
        but a partition that healed quickly may bring us back before that: the
        engine has rerun them meanwhile, and two agents must not work on the
        same thing. Done before the host is reported up again.
        """
        tokens = sorted(self._lost_tokens)
        sessions = self._sessions
        if not tokens or sessions is None:
            return
        try:
            async with sessions:
                result = await conn.run(
                    reap_command(tokens, grace=self._grace), check=False, stdin=asyncssh.DEVNULL
                )
        except (OSError, asyncssh.Error):
            return  # the connection is going too: try again at the next one
        if result.exit_status == 0:
            self._lost_tokens.difference_update(tokens)

    async def _watch(self, conn: asyncssh.SSHClientConnection) -> bool:
        """Report the host up and keep its health fresh until the connection ends.

        Whether the host is gone is for asyncssh's keepalive to say: a health
        check that is refused or slow changes nothing but the numbers' freshness.
        Returns True when the host was reported up (the backoff starts over).
        """
        interval = self._spec.keepalive_interval
        closed = asyncio.ensure_future(conn.wait_closed())
        probe: asyncio.Future[Any] | None = None
        was_up = False
        try:
            while not closed.done():
                probe = asyncio.ensure_future(self._probe(conn))
                await asyncio.wait({probe, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not probe.done():
                    break  # the connection ended; `finally` ends the probe
                # An exception means the connection is ending (keepalive gave up,
                # or the host closed it): `closed` says so at the next turn.
                if probe.exception() is None and self._conn is conn and not self._closing:
                    health = probe.result()
                    if health is not None:
                        latency, load = health
                        self._report(HostState.UP, latency=latency, load=load)
                        was_up = True
                    elif not was_up:
                        self._report(HostState.UP)  # answers, but every session is busy
                        was_up = True
                await asyncio.wait({closed}, timeout=interval)
        finally:
            closed.cancel()
            if probe is not None and not probe.done():
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await probe
        return was_up

    async def _probe(
        self, conn: asyncssh.SSHClientConnection
    ) -> tuple[float, tuple[float, float, float] | None] | None:
        """Latency and load by `cat /proc/loadavg`; None when every session is busy."""
        sessions = self._sessions
        assert sessions is not None
        if sessions.locked():
            # Attempts use every session we allow ourselves; keepalive still watches.
            return None
        async with sessions:
            started = time.monotonic()
            try:
                result = await conn.run("cat /proc/loadavg", check=False, stdin=asyncssh.DEVNULL)
            except asyncssh.ChannelOpenError:
                # The host allows fewer sessions than max_sessions: busy, not gone.
                return None
            latency = time.monotonic() - started
        return latency, _parse_loadavg(result.stdout)

    def _connection_lost(self, conn: asyncssh.SSHClientConnection, exc: Exception | None) -> None:
        """The connection ended: the host is DOWN, and its attempts are lost.

        Reported before any attempt's wait() returns, so that the engine, when
        it reruns them, sees this host down and picks another.
        """
        if self._conn is not conn:
            return
        self._conn = None
        if not self._closing:
            reason = f"connection lost ({exc})" if exc is not None else "connection closed"
            self._report(HostState.DOWN, reason=reason)
        for process in list(self._attempts):
            process.abandon(f"connection lost ({exc})" if exc is not None else "connection closed")
        if exc is not None and not conn.is_closed():
            conn.abort()

    # --- attempts ------------------------------------------------------------------

    async def start(self, request: LaunchRequest) -> RemoteProcess:
        """Start `request` on the host. Raises LaunchError; a host lost meanwhile
        gives an attempt whose wait() raises HostLostError."""
        if self._closing:
            raise LaunchError(f"{self.host}: not starting anything: fleetdeck is shutting down")
        setup = self._setup_for(request)
        process = RemoteProcess(
            self,
            request,
            log_fd=open_log(request.log_path),
            setup=setup,
            heartbeat=self._spec.keepalive_interval,
        )
        sessions = self._sessions
        conn = self._conn
        if sessions is None or conn is None:
            process.abandon("host not connected")
            return process
        self._attempts.add(process)
        try:
            await sessions.acquire()
        except asyncio.CancelledError:
            process.abandon("cancelled while starting")
            raise
        process.hold_session(sessions.release)
        if self._closing:
            process.abandon("fleetdeck is shutting down")
            raise LaunchError(f"{self.host}: not starting anything: fleetdeck is shutting down")
        if process.ended:
            return process  # lost with the connection while it waited
        if self._conn is not conn:
            process.abandon("connection lost while starting")
            return process
        command = remote_command(
            token=process.token,
            grace=self._grace,
            heartbeat=self._spec.keepalive_interval,
            misses=self.heartbeat_misses,
        )
        try:
            channel, _session = await conn.create_session(
                lambda: _Session(process), command, encoding=None
            )
        except asyncio.CancelledError:
            process.abandon("cancelled while starting")
            raise
        except asyncssh.ChannelOpenError as exc:
            if self._conn is not conn:
                process.abandon(f"connection lost while starting ({exc.reason})")
                return process
            process.abandon(exc.reason)
            raise LaunchError(
                f"{self.host}: the host refused a new session ({exc.reason}); is max_sessions "
                f"in [hosts.{self.host}] above the host's MaxSessions?"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            process.abandon(f"cannot open a session: {exc}")
            return process
        process.attach(channel)
        await process.started  # LaunchError: the wrapper is exiting, its session freed then
        return process

    def _setup_for(self, request: LaunchRequest) -> bytes:
        """The attempt as the wrapper reads it; LaunchError for what sh cannot carry."""
        # The engine's path to the agent's output is on this machine: the host
        # gets a copy of the file instead.
        env = {name: value for name, value in request.env.items() if name != AGENT_OUTPUT_VARIABLE}
        texts = [*request.argv, *env.values(), request.cwd or ""]
        if any("\0" in text for text in texts):
            raise LaunchError(f"{self.host}: a command argument or variable holds a NUL byte")
        if "\n" in request.argv[0] or "\n" in env.get("PATH", ""):
            raise LaunchError(f"{self.host}: the command's name or PATH holds a newline")
        for name in env:
            if not _VARIABLE_NAME.fullmatch(name):
                raise LaunchError(
                    f"{self.host}: cannot set the variable {name!r} on an SSH host: the host's "
                    "sh takes only letters, digits and _ in names (not a digit first)"
                )
        return attempt_setup(
            argv=request.argv,
            env=env,
            cwd=request.cwd,
            inputs=request.inputs,
            agent_output=_read_agent_output(request.env.get(AGENT_OUTPUT_VARIABLE)),
        )

    async def run_script(
        self, script: str, args: Iterable[str] = (), *, stdin: bytes = b""
    ) -> tuple[int, bytes, bytes]:
        """Run the POSIX sh `script` (with `args` as $1...) on the host, over this
        executor's connection and one of its sessions: its exit status (-1 when
        killed by a signal), stdout and stderr. For fleetdeck's own work there
        (git, for a task's worktree); HostLostError when not connected."""
        conn, sessions = self._conn, self._sessions
        if conn is None or sessions is None or self._closing:
            raise HostLostError(f"{self.host}: not connected")
        quoted = " ".join(shlex.quote(arg) for arg in args)
        command = f"exec /bin/sh -c {shlex.quote(script)} fleetdeck {quoted}"
        try:
            async with sessions:
                result = await conn.run(command, input=stdin, encoding=None, check=False)
        except (OSError, asyncssh.Error) as exc:
            raise HostLostError(f"{self.host}: {exc}") from None
        out, err = result.stdout, result.stderr
        status = result.exit_status
        if status is None and result.exit_signal is None:
            # Neither a status nor a signal: the channel went with the connection.
            raise HostLostError(f"{self.host}: the connection closed while fleetdeck worked there")
        return (
            -1 if status is None else status,
            out if isinstance(out, bytes) else b"",
            err if isinstance(err, bytes) else b"",
        )

    def _attempt_closed(self, process: RemoteProcess) -> None:
        self._attempts.discard(process)
        if process.orphaned:
            self._lost_tokens.add(process.token)

    def hurry(self) -> None:
        """Stops and leftover cleanups in progress send their SIGKILL now (a second Ctrl-C)."""
        for process in list(self._attempts):
            process.hurry()

    async def aclose(self) -> None:
        """Refuse new attempts, stop every remote attempt (whole trees), then close
        the connection."""
        self._closing = True
        running = [process for process in self._attempts if not process.ended]
        await asyncio.gather(
            *(process.stop(self._grace) for process in running), return_exceptions=True
        )
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()


def _read_agent_output(path: str | None) -> bytes | None:
    """The agent's output a CI attempt gets, read here to be sent to the host.

    A missing file (the agent wrote no output) becomes an empty one there.
    """
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _parse_loadavg(text: object) -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute loads of /proc/loadavg; None when it is not there."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if not isinstance(text, str):
        return None
    fields = text.split()
    try:
        return float(fields[0]), float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        return None
