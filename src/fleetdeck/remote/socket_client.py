"""`SocketClient`: an `EngineClient` at the other end of a supervisor's control
socket, so the same TUI runs attached; and `RemoteRun`, the `RunHandle` of a
run in another process.

The client keeps the latest snapshot the supervisor pushed (the task views
that changed are applied to the last ones, so an unchanged view stays the same
object, as in-process) and answers `snapshot()` from it, without a round trip.
A thread reads the socket; everything else is a request answered in order: a
command's reply comes after the snapshot that shows its effect, so a screen
that repaints after a command shows it. Listeners hear events on the event
loop they subscribed from.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fleetdeck.client import CommandError, Listener, WhatIfUnavailable
from fleetdeck.model import Stage
from fleetdeck.remote.protocol import (
    PROTOCOL,
    ProtocolError,
    bindable,
    decode,
    encode,
    event_from_json,
    version_problem,
)
from fleetdeck.snapshot import FleetSnapshot, TaskDetail, TaskView, Timeline
from fleetdeck.snapshot_codec import from_json

# How long a request may wait for its reply before the supervisor is taken for stuck.
REQUEST_SECONDS = 60.0


class AttachError(Exception):
    """The supervisor cannot be reached or talked to; the message says why, in one line."""


class Transport:
    """What carries the protocol to a supervisor: a connected stream socket that
    the client reads (in its thread) and writes with blocking calls, and
    whatever else the link holds.

    This one is the supervisor's Unix socket itself. Another link hands the
    client one end of a socket pair and carries the other end's bytes
    (`ssh_transport.SshTransport`, over an SSH connection), so the protocol
    code is the same whatever the link."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where  # the target as the user named it, for messages

    def lost(self) -> str | None:
        """Why the link beneath the socket failed, if it knows better than the
        end of the stream does (None: it did not fail)."""
        return None

    def close(self) -> None:
        """Let go of what the link holds beyond the socket (here: nothing)."""


class SocketClient:
    """An `EngineClient` over a supervisor's control socket, through `link`
    (a connected socket, or a `Transport`).

    `stream`: receive snapshots and events (an attached view); without it, the
    client only sends requests (the script commands)."""

    def __init__(self, link: socket.socket | Transport, *, stream: bool = True) -> None:
        self._transport = link if isinstance(link, Transport) else Transport(link, "")
        sock = self._sock = self._transport.sock
        self._file = sock.makefile("rb")
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._listeners: list[tuple[Listener, asyncio.AbstractEventLoop | None]] = []
        self._tasks: list[TaskView] = []
        self._snapshot: FleetSnapshot | None = None
        self._first = threading.Event()
        self._watchers: list[Callable[[], None]] = []
        self.gone: str | None = None  # why the connection ended, once it has
        self.closed = False  # this side let go (close): the run went on
        self.resyncs = 0  # fresh snapshots after falling behind
        self.hello = self._handshake(stream)
        self._thread = threading.Thread(target=self._read, name="fleetdeck-socket", daemon=True)
        self._thread.start()
        if stream and not self._first.wait(REQUEST_SECONDS):
            raise AttachError("the supervisor sent no snapshot")

    @classmethod
    def connect(cls, state_dir: str | os.PathLike[str], *, stream: bool = True) -> SocketClient:
        """Connect to the supervisor of `state_dir` (AttachError, in one line, if none runs):
        a local directory, or `ssh://[user@]host[:port]/path` on another machine."""
        from fleetdeck.remote.protocol import socket_path

        if is_ssh_target(state_dir):
            from fleetdeck.remote.ssh_transport import SshTransport

            return cls(SshTransport.open(str(state_dir)), stream=stream)
        path = socket_path(state_dir)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        name, fd = bindable(path)
        try:
            sock.connect(name)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise AttachError(f"{state_dir}: no fleet is running there (no supervisor)") from None
        except OSError as exc:
            sock.close()
            raise AttachError(f"{path}: {exc.strerror or exc}") from None
        finally:
            if fd is not None:
                os.close(fd)
        return cls(Transport(sock, str(state_dir)), stream=stream)

    # --- the connection -------------------------------------------------------------

    def _readline(self) -> dict[str, Any] | None:
        line = self._file.readline()
        if not line or not line.endswith(b"\n"):
            return None
        return decode(line)

    def _handshake(self, stream: bool) -> dict[str, Any]:
        self._sock.settimeout(REQUEST_SECONDS)
        try:
            hello = self._readline()
        except (OSError, ProtocolError) as exc:
            self._drop()
            raise AttachError(f"the supervisor did not say hello: {exc}") from None
        if hello is None:
            self._drop()
            raise AttachError("the supervisor closed the connection at once")
        if hello.get("type") == "error":
            self._drop()
            raise AttachError(str(hello.get("message")))
        problem = version_problem(hello.get("protocol"), peer="supervisor")
        if hello.get("type") != "hello" or problem is not None:
            self._drop()
            raise AttachError(problem or "the supervisor did not say hello")
        self._write({"type": "hello", "protocol": PROTOCOL, "stream": stream})
        self._sock.settimeout(None)
        return hello

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self._sock.close()
        self._transport.close()

    def _write(self, message: dict[str, Any]) -> None:
        line = encode(message)
        with self._write_lock:
            self._sock.sendall(line)

    def _read(self) -> None:
        why = "the supervisor has gone away"
        try:
            while (message := self._readline()) is not None:
                kind = message["type"]
                if kind == "snapshot":
                    self._apply(message)
                elif kind == "event":
                    self._deliver(message["event"])
                elif kind == "reply":
                    self._answered(message)
                elif kind == "resync":
                    self.resyncs += 1
                elif kind in ("bye", "error"):
                    why = str(message.get("message") or why)
        except (OSError, ValueError, ProtocolError) as exc:
            why = f"the connection to the supervisor failed: {exc}"
        finally:
            why = self._transport.lost() or why
            if self.closed:
                why = "detached"
            self.gone = why
            self._first.set()
            with self._pending_lock:
                pending, self._pending = self._pending, {}
            for waiter in pending.values():
                waiter.fail(why)
            if not self.closed:  # a view that let go is told nothing more
                for watcher in list(self._watchers):
                    watcher()

    def _apply(self, message: dict[str, Any]) -> None:
        count = int(message["count"])
        if message["full"]:
            tasks = [from_json(TaskView, view) for view in message["tasks"]]
        else:
            tasks = self._tasks[:count]
            tasks.extend([None] * (count - len(tasks)))  # type: ignore[list-item]
            for index, view in message["tasks"]:
                tasks[index] = from_json(TaskView, view)
        self._tasks = tasks
        rest = from_json(FleetSnapshot, {**message["rest"], "tasks": []})
        self._snapshot = dataclasses.replace(rest, tasks=tuple(tasks))
        self._first.set()
        for watcher in list(self._watchers):
            watcher()

    def _deliver(self, data: dict[str, Any]) -> None:
        event = event_from_json(data)
        for listener, loop in list(self._listeners):
            if loop is None:
                listener(event)
            else:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(listener, event)

    def _answered(self, message: dict[str, Any]) -> None:
        with self._pending_lock:
            waiter = self._pending.pop(int(message["id"]), None)
        if waiter is not None:
            waiter.answer(message)

    def watch(self, watcher: Callable[[], None]) -> None:
        """Call `watcher` (on the reading thread) after each snapshot and when the
        connection ends."""
        self._watchers.append(watcher)

    def request(self, op: str, **args: Any) -> Any:
        """Send one request and wait for its value (CommandError with the
        supervisor's message if it refused)."""
        waiter = _Pending()
        self._send(op, args, waiter)
        if not waiter.done.wait(REQUEST_SECONDS):
            raise CommandError(f"the supervisor did not answer {op} in {REQUEST_SECONDS:g}s")
        return waiter.value()

    async def request_async(self, op: str, **args: Any) -> Any:
        """`request`, awaited on the running loop instead of blocking it."""
        loop = asyncio.get_running_loop()
        waiter = _Pending(loop)
        self._send(op, args, waiter)
        assert waiter.future is not None
        await waiter.future
        return waiter.value()

    def _send(self, op: str, args: dict[str, Any], waiter: _Pending) -> None:
        if self.gone is not None:
            raise CommandError(self.gone)
        number = next(self._ids)
        with self._pending_lock:
            self._pending[number] = waiter
        try:
            self._write({"type": "request", "id": number, "op": op, "args": args})
        except OSError as exc:
            with self._pending_lock:
                self._pending.pop(number, None)
            raise CommandError(f"the connection to the supervisor failed: {exc}") from None

    # --- EngineClient ---------------------------------------------------------------

    def snapshot(self) -> FleetSnapshot:
        """The run as the supervisor last pushed it (a request, for a client without the stream)."""
        if self._snapshot is None:
            return from_json(FleetSnapshot, self.request("snapshot"))
        return self._snapshot

    def task_detail(self, task_id: str) -> TaskDetail:
        """One task's attempts, inputs and output."""
        return from_json(TaskDetail, self.request("task_detail", task=task_id))

    def timeline(self) -> Timeline:
        """Every attempt so far and the slots they ran in."""
        return from_json(Timeline, self.request("timeline"))

    async def task_diff(self, task_id: str) -> str:
        """The patch of the task's last change, secrets masked (by the supervisor)."""
        return str(await self.request_async("task_diff", task=task_id))

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with each event, on this loop (if one runs)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        entry = (listener, loop)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry)

    def set_policy(self, name: str) -> None:
        """Switch policy for the next launch decision."""
        self.request("set_policy", name=name)

    def pause(self) -> None:
        """Hold back new launches."""
        self.request("pause")

    def resume(self) -> None:
        """Let launches start again."""
        self.request("resume")

    def cancel(self, task_id: str) -> None:
        """Cancel a task."""
        self.request("cancel", task=task_id)

    def retry(self, task_id: str, stage: str | None = None) -> None:
        """Run a task again (`stage` "ci": CI alone)."""
        self.request("retry", task=task_id, stage=None if stage is None else str(stage))

    def retry_stages(self, task_id: str) -> tuple[Stage, ...]:
        """The stages a retry of `task_id` may start from."""
        return tuple(Stage(stage) for stage in self.request("retry_stages", task=task_id))

    def acknowledge(self, task_id: str) -> None:
        """The operator has seen a task that needs attention."""
        self.request("acknowledge", task=task_id)

    def request_stop(self, *, hurry: bool = False) -> None:
        """Stop the fleet (not only this view)."""
        self.request("request_stop", hurry=hurry)

    async def add(self, tasks: list[dict[str, Any]], *, source: str = "add") -> list[str]:
        """Add tasks (tables as in the config) to the running fleet; their ids,
        once the supervisor's journal holds them."""
        added = await self.request_async("add", tasks=tasks, source=source)
        return [str(task) for task in added]

    def last_lines(self, logs: Iterable[str], count: int = 1) -> dict[str, list[str]]:
        """The last lines of each log, read and masked by the supervisor."""
        wanted = list(logs)
        if not wanted:
            return {}
        try:
            answer = self.request("last_lines", logs=wanted, count=count)
        except CommandError:
            return {log: [] for log in wanted}  # the screen shows no line; it goes on
        return {str(log): [str(line) for line in lines] for log, lines in answer.items()}

    def follow_log(self, log: str) -> RemoteLogFeed:
        """A feed of the log's lines as they are written (read by the supervisor)."""
        return RemoteLogFeed(self, int(self.request("follow_log", log=log)["feed"]))

    @property
    def what_if_available(self) -> bool:
        """Whether the supervisor answers what-ifs."""
        try:
            return bool(self.request("what_if_available"))
        except CommandError:
            return False

    async def what_if(self) -> dict[str, float]:
        """Each policy's predicted time for the work left (the supervisor simulates)."""
        try:
            answer = await self.request_async("what_if")
        except _Refused as exc:
            raise WhatIfUnavailable(str(exc), learning=exc.learning) from None
        return {str(name): float(seconds) for name, seconds in answer.items()}

    def close(self) -> None:
        """Leave: the fleet goes on."""
        self.closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self._file.close()
        self._transport.close()


class _Refused(CommandError):
    """The supervisor refused a request (a CommandError; `learning` for what-ifs)."""

    def __init__(self, message: str, *, learning: bool = False) -> None:
        super().__init__(message)
        self.learning = learning


class _Pending:
    """A request waiting for its reply, on a thread or on an event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.done = threading.Event()
        self.loop = loop
        self.future: asyncio.Future[None] | None = None if loop is None else loop.create_future()
        self._reply: dict[str, Any] | None = None
        self._failure: str | None = None

    def answer(self, reply: dict[str, Any]) -> None:
        self._reply = reply
        self._settle()

    def fail(self, why: str) -> None:
        self._failure = why
        self._settle()

    def _settle(self) -> None:
        self.done.set()
        if self.loop is not None and self.future is not None:
            future = self.future

            def resolve() -> None:
                if not future.done():
                    future.set_result(None)

            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(resolve)

    def value(self) -> Any:
        if self._reply is None:
            raise CommandError(self._failure or "no reply")
        if not self._reply.get("ok"):
            raise _Refused(
                str(self._reply.get("error")), learning=bool(self._reply.get("learning"))
            )
        return self._reply.get("value")


class RemoteLogFeed:
    """A `LogFeed` whose log the supervisor reads."""

    def __init__(self, client: SocketClient, feed: int) -> None:
        self._client = client
        self._feed = feed
        self._skipped = 0

    @property
    def skipped(self) -> int:
        """Bytes at the start of the log never shown."""
        return self._skipped

    def read(self) -> list[str]:
        """The complete lines written since the last call."""
        try:
            answer = self._client.request("read_log", feed=self._feed)
        except CommandError:
            return []
        self._skipped = int(answer["skipped"])
        return [str(line) for line in answer["lines"]]


@dataclasses.dataclass(frozen=True)
class RemoteOutcome:
    """How a run in another process ended, as its last snapshot says."""

    exit_code: int
    interrupted: bool

    @property
    def report(self) -> Any:
        """Not carried over the socket: `fleetdeck report STATE_DIR` reads it."""
        raise CommandError("the report is read with `fleetdeck report`, not through the socket")

    @property
    def tasks(self) -> Any:
        """Not carried over the socket (see `report`)."""
        raise CommandError("the task table is read with `fleetdeck report`")


class ConnectionLost(Exception):
    """The supervisor went away before its run ended."""


class RemoteRun:
    """The `RunHandle` of a run in a supervisor process, seen through `client`.

    It neither starts nor stops that run: `start` only watches it, `close` lets
    go. SIGHUP and SIGTERM of the viewing process detach (`on_stop_signal`)."""

    def __init__(self, client: SocketClient) -> None:
        self.client = client
        self.stopped_from_outside = False
        self._ended = threading.Event()
        self._told = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_finish: Callable[[], None] | None = None
        self._signals: list[int] = []

    @property
    def finished(self) -> bool:
        """Whether the run has ended, or its supervisor has gone."""
        lost = self.client.gone is not None and not self.client.closed
        return lost or self._exit_code() is not None

    def _exit_code(self) -> int | None:
        snapshot = self.client._snapshot  # no round trip
        return None if snapshot is None else snapshot.exit_code

    @property
    def result(self) -> RemoteOutcome | None:
        """How the run ended, once it has."""
        code = self._exit_code()
        return None if code is None else RemoteOutcome(code, interrupted=code == 130)

    @property
    def failure(self) -> BaseException | None:
        """The supervisor's going away before its run ended."""
        lost = self.client.gone is not None and not self.client.closed
        if lost and self._exit_code() is None:
            return ConnectionLost(self.client.gone or "")
        return None

    def start(
        self,
        *,
        on_finish: Callable[[], None] | None = None,
        on_stop_signal: Callable[[], None] | None = None,
    ) -> None:
        """Watch the run: `on_finish` once it has ended (or its supervisor has
        gone); `on_stop_signal` when this process is asked to go (it detaches)."""
        self._loop = asyncio.get_running_loop()
        self._on_finish = on_finish
        self.client.watch(self._check)
        for signum in (signal.SIGHUP, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(signum, self._signalled, on_stop_signal)
                self._signals.append(signum)
        self._check()

    def _signalled(self, on_stop_signal: Callable[[], None] | None) -> None:
        self.stopped_from_outside = True
        if on_stop_signal is not None:
            on_stop_signal()

    def _check(self) -> None:
        if self._told or not self.finished:
            return
        self._told = True
        self._ended.set()
        if self._loop is not None and self._on_finish is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._on_finish)

    async def wait(self) -> RemoteOutcome:
        """Wait for the run's end (ConnectionLost if its supervisor goes first)."""
        while not self.finished:  # noqa: ASYNC110 - set from the reading thread
            await asyncio.sleep(0.05)
        if (result := self.result) is None:
            raise ConnectionLost(self.client.gone or "the supervisor has gone away")
        return result

    async def close(self) -> None:
        """Let go of the run (it goes on) and of the signal handlers."""
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            for signum in self._signals:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signum)
        self._signals = []


def is_ssh_target(target: object) -> bool:
    """Whether `target` names a state directory on another machine (`ssh://...`)."""
    return isinstance(target, str) and target.startswith("ssh://")


def state_dir_of(target: str) -> Path | str:
    """The state directory `target` names: a directory, or a fleet's TOML file
    (its `state_dir`), or an `ssh://` URL as it is. AttachError, in one line, if
    it is none of them."""
    if is_ssh_target(target):
        return target
    path = Path(target)
    if path.is_dir():
        return path
    if path.is_file():
        from fleetdeck.config import ConfigError, load_fleet

        try:
            return load_fleet(path).state_dir
        except ConfigError as exc:
            raise AttachError(exc.render()) from None
    raise AttachError(f"{target}: no such state directory or fleet file")
