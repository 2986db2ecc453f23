"""SSH hosts: attempts run as channels of one asyncssh connection per host.

Connection. `open()` starts a background task that connects, reports the host
UP, refreshes its latency and load (`cat /proc/loadavg`, timed) every
keepalive interval, and reconnects with exponential backoff when the connection
is lost. Transient trouble (refused, unreachable, no answer) is reported DOWN
and retried; trouble that retrying cannot fix (host key unknown or changed,
authentication refused, unusable identity file) is reported FAILED once and
the host is left alone for the rest of the run. asyncssh's keepalive closes a
connection whose host stops answering after about keepalive_interval x
keepalive_count seconds; the host is then DOWN and every attempt running there
ends with HostLostError (outcome `lost`: the engine reruns it elsewhere).

Host keys are always verified against known_hosts. An unknown key is refused
unless the host opts in with `trust_unknown_host_key`, and then it is pinned for
the run; a key that differs from known_hosts is refused in every case.

Attempts. Each attempt is one exec channel running `WRAPPER`, a POSIX sh script
(no Python needed on the host). We cannot rely on the channel to kill anything:
OpenSSH ignores signal requests from root sessions, and closing a channel
without a pty kills nothing. So the wrapper owns the attempt's life:

- It makes a private temp dir, writes the inputs JSON there (read from its
  stdin; for a CI attempt also a copy of the agent's output, for
  FLEETDECK_AGENT_OUTPUT), points FLEETDECK_INPUTS and FLEETDECK_OUTPUT into
  it, and starts the
  command with `setsid` (its own session and process group) under `env` (the
  worker's variables; OpenSSH's AcceptEnv would drop channel env requests).
  Every process of the attempt inherits FLEETDECK_ATTEMPT_MARK=<random token>.
- A reader turns its stdin into stop requests: "stop GRACE", "kill" (hurry),
  and end of input - which is also what it reads when sshd closes the session
  because the connection went away, so a dead fleetdeck or network stops the
  attempt too. A stop sends SIGTERM to every process of the attempt, then
  SIGKILL after the grace, and looks again until nothing is left. "Every
  process" is found in /proc: processes carrying the token (even after a double
  fork and setsid), the leader's session and group, and all their descendants.
- When the command ends, whatever it left running is stopped the same way; the
  wrapper then reports the exit status and sends the output file on the
  channel's stderr (our protocol channel: the attempt's own stderr is merged
  into stdout, which streams into the attempt's log), and removes its temp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import secrets
import shlex
import signal as signals
import socket
import time
from collections.abc import Mapping
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

# Reconnection backoff: first retry after this, doubling up to the cap, with jitter.
RECONNECT_FIRST = 1.0
RECONNECT_MAX = 30.0
# A command line longer than this is refused by Linux (one argv string of
# `sh -c` must stay under MAX_ARG_STRLEN, 128 KiB); we say so before trying.
MAX_COMMAND_BYTES = 120_000
# The variable by which the wrapper finds every process of an attempt.
MARK_VARIABLE = "FLEETDECK_ATTEMPT_MARK"
# A CI attempt's path to its agent's output: a file on this machine, which the
# wrapper re-creates on the host (the variable then names the host's copy).
AGENT_OUTPUT_VARIABLE = "FLEETDECK_AGENT_OUTPUT"
# Exit statuses above this are deaths by signal (status - 128), as sh reports them.
_SIGNAL_BASE = 128
_MAX_SIGNAL = 64

# The remote wrapper (see the module docstring). Arguments: token, grace,
# what comes on stdin (0-3, below), workdir ('' for the login directory), PATH to look the
# command up in ('' for the host's), number of NAME=VALUE entries, the
# entries, then the argv. Comment lines are stripped before it is sent.
_WRAPPER_SOURCE = r"""
t=$1 g=$2 w=$3 c=$4 lp=$5 n=$6
shift 6
# fd 3 carries the protocol to fleetdeck (the channel's stderr); stray messages
# of the wrapper's own tools go into the attempt's log, with its output.
exec 3>&2 2>&1 4<&0
say() { printf '%s %s\n' "$t" "$*" >&3; }
d=$(mktemp -d "${TMPDIR:-/tmp}/fleetdeck.XXXXXXXXXX") || { say error tmp; exit 1; }
fail() { say error "$1"; rm -rf "$d"; exit 1; }
# Data from this machine, on stdin: w=1 the inputs JSON line, w=2 the agent's
# output (a CI attempt's FLEETDECK_AGENT_OUTPUT) as one printf-%b-escaped line,
# w=3 both, in that order.
case $w in
  1) head -n 1 >"$d/inputs.json" || fail inputs ;;
  2) head -n 1 >"$d/pre" || fail inputs ;;
  3) head -n 2 >"$d/pre" && sed -n 1p "$d/pre" >"$d/inputs.json" || fail inputs ;;
esac
[ -e "$d/inputs.json" ] || printf '{}' >"$d/inputs.json"
if [ "$w" -ge 2 ]; then
  printf '%b' "$(sed -n "$((w - 1))p" "$d/pre")" >"$d/agent-output" || fail inputs
  export FLEETDECK_AGENT_OUTPUT="$d/agent-output"
fi
if [ -n "$c" ]; then
  case $c in "~") c=$HOME ;; "~/"*) c=$HOME/${c#"~/"} ;; esac
  cd "$c" 2>/dev/null || fail workdir
fi
eval "a=\${$((n + 1))}"
case $a in
  */*)
    if [ ! -e "$a" ]; then fail notfound; elif [ -d "$a" ] || [ ! -x "$a" ]; then fail noexec; fi
    ;;
  *) PATH=${lp:-$PATH} command -v "$a" >/dev/null 2>&1 || fail notfound ;;
esac
# Every live process of the attempt, one pid a line: those whose environment
# holds our token, the leader's session and group, and all their descendants.
pids() {
  {
    grep -l -F -e "FLEETDECK_ATTEMPT_MARK=$t" /proc/[0-9]*/environ
    cat /proc/[0-9]*/stat
  } 2>/dev/null |
    awk -v p="$p" '
      /^\/proc\// { split($0, f, "/"); seed[f[3]] = 1; next }
      {
        pid = $1; sub(/.*\) /, "")
        if ($1 == "Z" || $1 == "X") next
        live[pid] = 1; parent[pid] = $2
        if (pid == p || $3 == p || $4 == p) seed[pid] = 1
      }
      END {
        for (q in seed) if (q in live) found[q] = 1
        do {
          more = 0
          for (q in live) if (!(q in found) && (parent[q] in found)) { found[q] = 1; more = 1 }
        } while (more)
        for (q in found) print q
      }'
}
# SIGTERM once to each process, SIGKILL to all that is left after $1 seconds
# (at once after a "kill"); return when nothing of the attempt is left.
killtree() {
  l=$(pids)
  if [ -n "$l" ]; then
    ticks=$(awk -v g="$1" 'BEGIN { print int(g * 20 + 0.999) }') sent=" " rounds=0
    while [ -n "$l" ] && [ "$rounds" -lt 200 ]; do
      if [ "$ticks" -le 0 ] || [ -e "$d/kill" ]; then
        kill -KILL $l 2>/dev/null
        rounds=$((rounds + 1))
      else
        for q in $l; do
          case $sent in *" $q "*) ;; *) kill -TERM "$q" 2>/dev/null; sent="$sent$q " ;; esac
        done
        ticks=$((ticks - 1))
      fi
      sleep 0.05
      l=$(pids)
    done
  fi
  : >"$d/stopped"
}
s=
command -v setsid >/dev/null 2>&1 && s="setsid -w"
FLEETDECK_INPUTS=$d/inputs.json FLEETDECK_OUTPUT=$d/output FLEETDECK_ATTEMPT_MARK=$t \
  $s env "$@" </dev/null 3>&- 4<&- &
p=$!
# A write to a vanished connection must not kill the wrapper before it has
# cleaned up (the attempt, started before this, keeps the default SIGPIPE).
trap '' PIPE
# Stop requests: "stop GRACE", "kill", or the end of input, which is also what
# this reads when sshd closes the session because the connection is gone.
(
  exec >/dev/null 2>&1 3>&-
  k=
  while IFS= read -r l; do
    case $l in
      "stop "*) [ -n "$k" ] || { : >"$d/stopping"; killtree "${l#stop }" & k=$!; } ;;
      kill) : >"$d/kill"; [ -n "$k" ] || { : >"$d/stopping"; killtree 0 & k=$!; } ;;
    esac
  done
  [ -n "$k" ] || { : >"$d/stopping"; killtree "$g" & k=$!; }
  wait "$k"
) <&4 &
r=$!
exec 4<&-
say started "$p"
wait "$p"
e=$?
# Stopped: wait for the stop to finish. Ended by itself: stop what it left.
if [ -e "$d/stopping" ]; then
  while [ ! -e "$d/stopped" ]; do sleep 0.05; done
else
  killtree "$g"
fi
kill "$r" 2>/dev/null
if [ -f "$d/output" ]; then say exit "$e" 1; cat "$d/output" >&3; else say exit "$e" 0; fi
rm -rf "$d"
"""
WRAPPER = "\n".join(
    line for line in _WRAPPER_SOURCE.strip().splitlines() if not line.lstrip().startswith("#")
)


def remote_command(
    *,
    token: str,
    grace: float,
    has_inputs: bool,
    has_agent_output: bool = False,
    cwd: str | None,
    env: Mapping[str, str],
    argv: tuple[str, ...],
) -> str:
    """The exec command of one attempt: the wrapper and its quoted arguments.

    The login shell runs it, so it starts by handing over to /bin/sh: what
    follows is POSIX whatever the user's shell is. Every argument is quoted on
    its own, so argv reaches the command exactly as given, never re-split.
    """
    entries = [f"{name}={value}" for name, value in env.items() if name != AGENT_OUTPUT_VARIABLE]
    params = [
        token,
        f"{grace:.3f}",
        str(int(has_inputs) + 2 * int(has_agent_output)),
        cwd or "",
        env.get("PATH", ""),
        str(len(entries)),
        *entries,
        *argv,
    ]
    quoted = " ".join(shlex.quote(param) for param in params)
    return f"exec /bin/sh -c {shlex.quote(WRAPPER)} fleetdeck {quoted}"


def exit_status(raw: int) -> int:
    """The wrapper's status as the local executor reports it: -N for signal N."""
    if _SIGNAL_BASE < raw <= _SIGNAL_BASE + _MAX_SIGNAL:
        return _SIGNAL_BASE - raw
    return raw


def resolve_path(path: str, base_dir: Path) -> Path:
    """`~` expanded, relative paths taken from the config file's directory."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else base_dir / expanded


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Permanent(Exception):
    """Connecting cannot succeed this run: the host is FAILED."""


class _Transient(Exception):
    """Connecting failed for now: the host is DOWN and we try again."""


class RemoteProcess(AttemptProcess):
    """One attempt on an SSH host: an exec channel running the wrapper."""

    def __init__(self, executor: SshExecutor, request: LaunchRequest, log_fd: int) -> None:
        self._executor = executor
        self._request = request
        self._token = secrets.token_hex(16).encode()
        self._log_fd = log_fd
        self._out_fd = -1
        self._control = bytearray()
        self._sending_output = False
        self._status: int | None = None
        self._lost: str | None = None
        self._channel: asyncssh.SSHClientChannel[bytes] | None = None
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._stop_deadline: float | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._killed = False
        # Holds one of the executor's sessions (max_sessions) until the channel closes.
        self.holds_session = False
        self._launch_failed = False
        self._last_stray = ""

    @property
    def token(self) -> str:
        """The random mark every process of this attempt carries on the host."""
        return self._token.decode()

    @property
    def ended(self) -> bool:
        """True once the channel is closed (ended, or lost with its host)."""
        return self._closed.done()

    # --- from the channel ------------------------------------------------------

    def attach(self, channel: asyncssh.SSHClientChannel[bytes]) -> None:
        """Tie this attempt to its (open) channel."""
        self._channel = channel

    def on_stdout(self, data: bytes) -> None:
        """Output of the attempt (stdout and stderr): straight into its log."""
        if self._log_fd >= 0:
            _write_all(self._log_fd, data)

    def on_control(self, data: bytes) -> None:
        """The wrapper's protocol lines, then, after `exit`, the output file's bytes."""
        if self._closed.done():
            return  # abandoned: the connection is being torn down
        if self._sending_output:
            _write_all(self._out_fd, data)
            return
        self._control += data
        prefix = self._token + b" "
        while not self._sending_output and (end := self._control.find(b"\n")) >= 0:
            line = bytes(self._control[:end])
            del self._control[: end + 1]
            if not line.startswith(prefix):
                # Not the wrapper's (a login script writing to stderr): keep it
                # in the log, where the operator will look.
                self.on_stdout(line + b"\n")
                self._last_stray = line.decode(errors="replace").strip()
                continue
            self._on_message(line[len(prefix) :].decode(errors="replace").split())
        if self._sending_output and self._control:
            _write_all(self._out_fd, bytes(self._control))
            self._control.clear()

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
            case ["exit", status, has_output] if status.isdigit():
                self._status = exit_status(int(status))
                if has_output == "1":
                    try:
                        self._out_fd = os.open(
                            self._request.output_path,
                            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                            0o600,
                        )
                    except OSError:
                        self._out_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
                    self._sending_output = True
            case _:
                pass  # a newer wrapper's message: nothing we need

    def _launch_message(self, code: str) -> str:
        host = self._executor.host
        request = self._request
        if code == "workdir":
            return f"{host}: workdir does not exist: {request.cwd}"
        if code == "notfound":
            return f"{host}: command not found: {request.argv[0]!r}"
        if code == "noexec":
            return f"{host}: permission denied running {request.argv[0]!r}"
        if code == "tmp":
            return f"{host}: cannot create a temporary directory (is /tmp full or read-only?)"
        return f"{host}: cannot start the attempt ({code})"

    def on_closed(self, exc: Exception | None, exit_code: int | None) -> None:
        """The channel is gone: the attempt ended, or its host was lost."""
        if self._closed.done():
            return
        if exc is not None and (self._status is None or self._sending_output):
            # The status, or the output that follows it, did not arrive in full.
            self._lost = f"{self._executor.host}: connection lost ({exc})"
        elif self._status is None:
            # The wrapper ended without reporting (killed on the host, or the
            # login shell could not run it): whatever the channel says.
            self._status = exit_code if exit_code is not None else 255
            if not self.started.done():
                tail = self._control.decode(errors="replace").strip() or self._last_stray
                detail = f": {tail}" if tail else ""
                self.started.set_exception(
                    LaunchError(
                        f"{self._executor.host}: the remote wrapper did not start "
                        f"(exit status {self._status}){detail}"
                    )
                )
            elif not self._launch_failed:
                note = f"fleetdeck: the remote wrapper ended without a status ({self._status})\n"
                self.on_stdout(note.encode())
        if not self.started.done():
            self.started.set_result(None)  # lost: wait() says so
        for fd in (self._log_fd, self._out_fd):
            if fd >= 0:
                os.close(fd)
        self._log_fd = self._out_fd = -1
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        self._closed.set_result(None)
        self._executor._attempt_closed(self)

    # --- AttemptProcess ---------------------------------------------------------

    async def wait(self) -> int:
        """The exit status of the command; HostLostError if its host went away."""
        await asyncio.shield(self._closed)
        if self._lost is not None:
            raise HostLostError(self._lost)
        assert self._status is not None
        return self._status

    async def stop(self, grace: float) -> None:
        """Ask the wrapper to stop the whole tree; return once the channel closed.

        A second call with a shorter grace brings the SIGKILL forward.
        """
        if self._closed.done():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._stop_deadline is None:
            self._stop_deadline = deadline
            self._send(f"stop {max(grace, 0.0):.3f}\n")
        elif deadline < self._stop_deadline:
            self._stop_deadline = deadline
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            self._kill_timer = loop.call_at(deadline, self.kill_now)
        await asyncio.shield(self._closed)

    def kill_now(self) -> None:
        """Skip what is left of the grace of a stop in progress."""
        if self._stop_deadline is not None and not self._killed:
            self._killed = True
            self._send("kill\n")

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self._stop_deadline is not None

    def send_data(self, agent_output: bytes | None) -> None:
        """What the wrapper reads before it starts the command (see WRAPPER)."""
        data = b""
        if self._request.inputs:
            # One line: json.dumps escapes every newline (and, by default, non-ASCII).
            data += json.dumps(dict(self._request.inputs)).encode() + b"\n"
        if agent_output is not None:
            data += printf_escape(agent_output) + b"\n"
        if data:
            self._send_bytes(data)

    def _send(self, text: str) -> None:
        self._send_bytes(text.encode())

    def _send_bytes(self, data: bytes) -> None:
        channel = self._channel
        if channel is None or self._closed.done():
            return
        # The channel may be closing under us (host lost): nothing left to tell.
        with contextlib.suppress(OSError, asyncssh.Error):
            channel.write(data)

    def abandon(self, reason: str) -> None:
        """Give up on the channel (the connection is gone): the attempt is lost."""
        if not self._closed.done():
            self.on_closed(ConnectionError(reason), None)


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
        self._health = HostHealth(host=name, state=HostState.DOWN)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._sessions: asyncio.Semaphore | None = None
        self._attempts: set[RemoteProcess] = set()
        self._closing = False
        # With trust_unknown_host_key: the key accepted at the first connection,
        # the only one accepted from then on this run.
        self._pinned_key: asyncssh.SSHKey | None = None
        self._key_verdict: str | None = None
        self._rng = random.Random()

    @property
    def health(self) -> HostHealth:
        """The last health reported."""
        return self._health

    @property
    def destination(self) -> str:
        """`user@address:port`, for messages."""
        user = f"{self._spec.user}@" if self._spec.user else ""
        return f"{user}{self._spec.address}:{self._spec.port}"

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
        self._health = HostHealth(self.host, state, latency=latency, load=load, reason=reason)
        if self._listener is not None and not self._closing:
            self._listener(self._health)

    async def _keep_connected(self) -> None:
        delay = RECONNECT_FIRST
        while not self._closing:
            try:
                conn = await self._connect()
            except _Permanent as exc:
                self._report(HostState.FAILED, reason=str(exc))
                return
            except (_Transient, Exception) as exc:
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
        try:
            return asyncssh.read_private_key(str(path))
        except FileNotFoundError:
            raise _Permanent(f"identity file {path} does not exist") from None
        except OSError as exc:
            raise _Permanent(f"cannot read identity file {path}: {exc.strerror}") from None
        except asyncssh.KeyEncryptionError:
            raise _Permanent(
                f"identity file {path} is protected by a passphrase: load it into ssh-agent "
                f"and leave identity unset in [hosts.{self.host}]"
            ) from None
        except (asyncssh.KeyImportError, ValueError) as exc:
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

    async def _watch(self, conn: asyncssh.SSHClientConnection) -> bool:
        """Report the host up and keep its health fresh until the connection ends.

        Returns True when the host was up (the backoff starts over), False
        when the connection ended before its first health check answered.
        """
        interval = self._spec.keepalive_interval
        patience = interval * self._spec.keepalive_count
        closed = asyncio.ensure_future(conn.wait_closed())
        was_up = False
        try:
            while not closed.done():
                probe = asyncio.ensure_future(self._probe(conn))
                await asyncio.wait(
                    {probe, closed}, timeout=patience, return_when=asyncio.FIRST_COMPLETED
                )
                if not probe.done():
                    probe.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await probe
                    if not closed.done():
                        # Keepalive will say the same very soon; no need to wait.
                        self._connection_lost(
                            conn, ConnectionError(f"health check unanswered for {patience:g}s")
                        )
                    break
                if probe.exception() is not None:
                    if not closed.done():
                        error = probe.exception()
                        self._connection_lost(conn, error if isinstance(error, Exception) else None)
                    break
                result = probe.result()
                if result is not None and self._conn is conn and not self._closing:
                    latency, load = result
                    self._report(HostState.UP, latency=latency, load=load)
                    was_up = True
                await asyncio.wait({closed}, timeout=interval)
        finally:
            closed.cancel()
        return was_up

    async def _probe(
        self, conn: asyncssh.SSHClientConnection
    ) -> tuple[float, tuple[float, float, float] | None] | None:
        """Latency and load by `cat /proc/loadavg`; None when every session is busy."""
        sessions = self._sessions
        assert sessions is not None
        if sessions.locked():
            # Attempts use every session the host allows; keepalive still watches it.
            return None
        async with sessions:
            started = time.monotonic()
            result = await conn.run("cat /proc/loadavg", check=False, stdin=asyncssh.DEVNULL)
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
            process.abandon(str(exc) if exc is not None else "connection closed")
        if exc is not None and not conn.is_closed():
            conn.abort()

    # --- attempts ------------------------------------------------------------------

    async def start(self, request: LaunchRequest) -> RemoteProcess:
        """Start `request` on the host. Raises LaunchError; a host lost meanwhile
        gives an attempt whose wait() raises HostLostError."""
        if any("\0" in arg for arg in request.argv) or any(
            "\0" in key or "=" in key or "\0" in value for key, value in request.env.items()
        ):
            raise LaunchError(f"{self.host}: a command argument or variable holds a NUL byte")
        try:
            log_fd = os.open(
                request.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise LaunchError(f"cannot open log {request.log_path}: {exc.strerror}") from None
        agent_output = _read_agent_output(request.env.get(AGENT_OUTPUT_VARIABLE))
        process = RemoteProcess(self, request, log_fd)
        command = remote_command(
            token=process.token,
            grace=self._grace,
            has_inputs=bool(request.inputs),
            has_agent_output=agent_output is not None,
            cwd=request.cwd,
            env=request.env,
            argv=request.argv,
        )
        if len(command.encode()) > MAX_COMMAND_BYTES:
            os.close(log_fd)
            raise LaunchError(
                f"{self.host}: command, prompt and environment take {len(command)} bytes; "
                f"an SSH host takes at most {MAX_COMMAND_BYTES}"
            )
        self._attempts.add(process)
        sessions = self._sessions
        conn = self._conn
        if sessions is None or conn is None:
            process.abandon("host not connected")
            return process
        await sessions.acquire()
        process.holds_session = True
        if self._conn is not conn:
            process.abandon("connection lost while starting")
            return process
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
            self._attempts.discard(process)
            raise LaunchError(
                f"{self.host}: the host refused a new session ({exc.reason}); is max_sessions "
                f"in [hosts.{self.host}] above the host's MaxSessions?"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            process.abandon(f"cannot open a session: {exc}")
            return process
        process.attach(channel)
        process.send_data(agent_output)
        try:
            await process.started
        except LaunchError:
            # The wrapper is exiting; its session is free once its channel closes.
            with contextlib.suppress(HostLostError):
                await process.wait()
            raise
        return process

    def _attempt_closed(self, process: RemoteProcess) -> None:
        self._attempts.discard(process)
        if process.holds_session and self._sessions is not None:
            process.holds_session = False
            self._sessions.release()

    def hurry(self) -> None:
        """Every stop in progress sends its SIGKILL now (a second Ctrl-C)."""
        for process in list(self._attempts):
            if process.stopping:
                process.kill_now()

    async def aclose(self) -> None:
        """Stop every remote attempt (whole trees), then close the connection."""
        running = [process for process in self._attempts if not process.ended]
        await asyncio.gather(
            *(process.stop(self._grace) for process in running), return_exceptions=True
        )
        self._closing = True
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()


def printf_escape(data: bytes) -> bytes:
    """`data` as one line that sh's `printf '%b'` turns back into `data`."""
    return data.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\0", b"\\0000")


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
    """The 1, 5 and 15 minute loads of /proc/loadavg; None elsewhere (no /proc)."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if not isinstance(text, str):
        return None
    fields = text.split()
    try:
        return float(fields[0]), float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        return None
