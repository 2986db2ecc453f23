"""`ControlServer`: the supervisor's control socket (protocol: fleetdeck.remote.protocol).

It answers every client from the engine's own `InProcessClient`, on the
engine's event loop, and pushes what streaming clients (attached TUIs) see:
a snapshot when something changed (four times a second at most, one encoding
shared by every client; the task views that changed, after the first) and
every event once it is journaled.

A slow or stuck client never slows the engine. Writes never wait: each client
has its own buffer, bounded by `high_water` bytes. A client whose buffer is
over it is behind: nothing more is queued for it (the events it misses are
counted), and once its buffer has drained it is sent a whole fresh snapshot
and a `resync` saying how many events it missed. A client behind for
`drop_after` seconds is dropped, with a message and a line in the supervisor's
log. A peer of another uid is refused whatever the socket's mode (SO_PEERCRED).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import itertools
import os
import socket
import struct
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from fleetdeck import __version__
from fleetdeck.client import CommandError, WhatIfUnavailable
from fleetdeck.remote.protocol import (
    MAX_LINE,
    PROTOCOL,
    SUPPORTED,
    ProtocolError,
    bindable,
    decode,
    encode,
    event_json,
    socket_path,
    version_problem,
)
from fleetdeck.snapshot_codec import to_json

if TYPE_CHECKING:
    from fleetdeck.inprocess import InProcessClient
    from fleetdeck.logtail import LogFollower
    from fleetdeck.model import Event
    from fleetdeck.snapshot import FleetSnapshot, TaskView

# Snapshots pushed per second at most (the TUI repaints four times a second).
PUSH_SECONDS = 0.25
# Even with nothing new, this often: the clocks on attached screens move.
IDLE_PUSH_SECONDS = 1.0
# A client's unsent bytes above this: it is behind.
HIGH_WATER = 8 * 1024 * 1024
# Behind this long: dropped.
DROP_AFTER = 30.0
# How long a client has to say hello.
HELLO_SECONDS = 10.0

# Commands: after each, every streaming client is sent a snapshot before the reply.
_COMMANDS = frozenset(
    {"set_policy", "pause", "resume", "cancel", "retry", "acknowledge", "request_stop", "add"}
)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _Peer:
    """One connected client: its writer, and whether it is behind."""

    def __init__(self, writer: asyncio.StreamWriter, number: int) -> None:
        self.writer = writer
        self.number = number
        self.streaming = False
        self.behind_since: float | None = None
        self.missed = 0
        self.feeds: dict[int, LogFollower] = {}
        self.closed = False
        # Since when what was sent to it lies unread (None: it has read it all).
        self.unread_since: float | None = None

    def buffered(self) -> int:
        transport = self.writer.transport
        return 0 if transport.is_closing() else transport.get_write_buffer_size()

    def unread(self) -> int:
        """Bytes sent that the client has not read: ours, and the kernel's queue."""
        queued = 0
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                queued = struct.unpack("i", raw)[0]
        return self.buffered() + queued


class ControlServer:
    """The control socket of one supervisor, over its engine's in-process client."""

    def __init__(
        self,
        client: InProcessClient,
        state_dir: Path,
        *,
        add: Callable[[Any], list[str]] | None = None,
        high_water: int = HIGH_WATER,
        drop_after: float = DROP_AFTER,
        push_seconds: float = PUSH_SECONDS,
        log: TextIO | None = None,
    ) -> None:
        """`add`: carries out an `add` request (its `tasks` argument), returning
        the ids added (raises CommandError with the config's messages)."""
        self.client = client
        self.engine = client.engine
        self.path = socket_path(state_dir)
        self._state_dir = os.path.realpath(state_dir)
        self._add = add
        self.high_water = high_water
        self.drop_after = drop_after
        self.push_seconds = push_seconds
        self._log = log
        self._server: asyncio.AbstractServer | None = None
        self._peers: list[_Peer] = []
        self._numbers = itertools.count(1)
        self._feed_ids = itertools.count(1)
        self._dirty = True
        self._last_push = 0.0
        self._sent: tuple[TaskView, ...] | None = None  # the tasks of the last push
        self._unsubscribe: Callable[[], None] | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self.dropped = 0  # clients dropped for falling behind (for tests and the log)

    @property
    def clients(self) -> int:
        """Views attached now (clients that take the stream; a script's request is not one)."""
        return sum(peer.streaming for peer in self._peers)

    # --- listening ------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the state directory's socket (0600; a stale one is replaced)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        name, fd = bindable(self.path)
        old = os.umask(0o177)  # 0600 from the start: no moment when others may connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, name, limit=MAX_LINE)
        finally:
            os.umask(old)
            if fd is not None:
                os.close(fd)
        os.chmod(self.path, 0o600)
        self._unsubscribe = self.engine.subscribe(self._on_event)
        self._schedule_tick()

    async def close(self) -> None:
        """Stop listening, say goodbye to every client and remove the socket."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._server is not None:
            self._server.close()
        for peer in list(self._peers):
            self._send(peer, {"type": "bye", "message": "the supervisor has exited"}, force=True)
            self._close_peer(peer)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    def say(self, line: str) -> None:
        """A line in the supervisor's log."""
        out = self._log or sys.stderr
        with contextlib.suppress(OSError, ValueError):
            out.write(f"fleetdeck: control: {line}\n")
            out.flush()

    # --- one client -----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _Peer(writer, next(self._numbers))
        sock = writer.get_extra_info("socket")
        try:
            uid = peer_uid(sock)
            if uid != os.getuid():
                message = (
                    f"refused: this fleet belongs to uid {os.getuid()}, "
                    f"not to uid {uid} (the connecting user)"
                )
                self.say(f"client {peer.number} of uid {uid} {message}")
                self._send(peer, {"type": "error", "message": message}, force=True)
                return
            self._peers.append(peer)
            self._send(peer, self._hello(), force=True)
            line = await asyncio.wait_for(reader.readline(), HELLO_SECONDS)
            hello = decode(line)
            if hello.get("type") != "hello":
                raise ProtocolError("the first message must be a hello")
            problem = version_problem(hello.get("protocol"), peer="client")
            if problem is not None:
                self._send(peer, {"type": "error", "message": problem}, force=True)
                return
            if hello.get("stream"):
                peer.streaming = True
                self._send_full(peer)
            while line := await reader.readline():
                if not line.endswith(b"\n"):
                    break  # the client went away mid-line
                await self._request(peer, decode(line))
        except (ProtocolError, TimeoutError) as exc:
            self._send(peer, {"type": "error", "message": str(exc)}, force=True)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # gone (a killed TUI), or a line over the limit
        finally:
            self._close_peer(peer)

    def _hello(self) -> dict[str, Any]:
        engine = self.engine
        return {
            "type": "hello",
            "protocol": PROTOCOL,
            "protocols": list(SUPPORTED),
            "fleetdeck": __version__,
            "pid": os.getpid(),
            "fleet": engine.fleet.name,
            "state_dir": str(engine.state_dir),
            "run_id": engine.run_id,
        }

    def _close_peer(self, peer: _Peer) -> None:
        if peer in self._peers:
            self._peers.remove(peer)
        peer.feeds.clear()
        if not peer.closed:
            peer.closed = True
            with contextlib.suppress(Exception):
                peer.writer.close()

    async def _request(self, peer: _Peer, message: dict[str, Any]) -> None:
        if message.get("type") != "request":
            raise ProtocolError(f"unexpected message {message.get('type')!r}")
        number = message.get("id")
        op = message.get("op")
        args = message.get("args") or {}
        if not isinstance(op, str) or not isinstance(args, dict):
            raise ProtocolError("a request has an 'op' and an object of 'args'")
        try:
            value = await self._answer(peer, op, args)
        except (CommandError, WhatIfUnavailable) as exc:
            reply: dict[str, Any] = {"type": "reply", "id": number, "ok": False, "error": str(exc)}
            if isinstance(exc, WhatIfUnavailable):
                reply["learning"] = exc.learning
            self._send(peer, reply, force=True)
            return
        except (KeyError, TypeError, ValueError) as exc:
            self._send(
                peer,
                {"type": "reply", "id": number, "ok": False, "error": f"bad {op} request: {exc}"},
                force=True,
            )
            return
        if op in _COMMANDS:
            self.push()  # the command's effect reaches every screen before this reply
        self._send(peer, {"type": "reply", "id": number, "ok": True, "value": value}, force=True)

    async def _answer(self, peer: _Peer, op: str, args: dict[str, Any]) -> Any:
        client = self.client
        if op == "snapshot":
            return to_json(client.snapshot())
        if op == "task_detail":
            return to_json(client.task_detail(str(args["task"])))
        if op == "timeline":
            return to_json(client.timeline())
        if op == "task_diff":
            return await client.task_diff(str(args["task"]))
        if op == "set_policy":
            client.set_policy(str(args["name"]))
            return None
        if op == "pause":
            client.pause()
            return None
        if op == "resume":
            client.resume()
            return None
        if op == "cancel":
            client.cancel(str(args["task"]))
            return None
        if op == "retry":
            stage = args.get("stage")
            client.retry(str(args["task"]), None if stage is None else str(stage))
            return None
        if op == "retry_stages":
            return [stage.value for stage in client.retry_stages(str(args["task"]))]
        if op == "acknowledge":
            client.acknowledge(str(args["task"]))
            return None
        if op == "request_stop":
            self.say(f"client {peer.number} asked the run to stop")
            client.request_stop(hurry=bool(args.get("hurry", False)))
            return None
        if op == "add":
            if self._add is not None:
                return self._add(args["tasks"])
            return await client.add(args["tasks"], source=str(args.get("source", "add")))
        if op == "last_lines":
            logs = [self._log_path(str(log)) for log in args["logs"]]
            return client.last_lines(logs, int(args.get("count", 1)))
        if op == "follow_log":
            feed = client.follow_log(self._log_path(str(args["log"])))
            number = next(self._feed_ids)
            peer.feeds[number] = feed  # type: ignore[assignment]
            return {"feed": number}
        if op == "read_log":
            follower = peer.feeds.get(int(args["feed"]))
            if follower is None:
                raise CommandError("no such log feed")
            return {"lines": follower.read(), "skipped": follower.skipped}
        if op == "close_log":
            peer.feeds.pop(int(args["feed"]), None)
            return None
        if op == "what_if_available":
            return client.what_if_available
        if op == "what_if":
            return await client.what_if()
        raise CommandError(f"unknown request {op!r}")

    def _log_path(self, log: str) -> str:
        """`log`, if it is a file of this fleet's state directory (a client reads
        only the logs of its run)."""
        real = os.path.realpath(log)
        if not real.startswith(self._state_dir + os.sep):
            raise CommandError(f"{log}: not a log of this fleet")
        return real

    # --- pushing --------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        self._dirty = True
        if not any(peer.streaming for peer in self._peers):
            return
        line = encode({"type": "event", "event": event_json(event)})
        for peer in self._peers:
            if peer.streaming:
                self._send(peer, line)

    def _schedule_tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(self.push_seconds, self._tick)

    def _tick(self) -> None:
        try:
            # Before the push: what is unread now was sent a tick ago or more.
            self._catch_up()
            idle = time.monotonic() - self._last_push >= IDLE_PUSH_SECONDS
            if self._dirty or idle:
                self.push()
        finally:
            self._schedule_tick()

    def push(self) -> None:
        """Send every streaming client the snapshot now (the task views that
        changed since the last push; whole to a client that needs it whole)."""
        self._dirty = False
        self._last_push = time.monotonic()
        streaming = [peer for peer in self._peers if peer.streaming]
        if not streaming:
            self._sent = None
            return
        snapshot = self.engine.snapshot()
        tasks = snapshot.tasks
        sent, self._sent = self._sent, tasks
        if sent is None:
            changed = list(enumerate(tasks))
        else:
            changed = [
                (i, new) for i, new in enumerate(tasks) if i >= len(sent) or new is not sent[i]
            ]
        line = encode(
            {
                "type": "snapshot",
                "full": False,
                "count": len(tasks),
                "tasks": [[i, to_json(view)] for i, view in changed],
                "rest": _rest(snapshot),
            }
        )
        for peer in streaming:
            self._send(peer, line)

    def _send_full(self, peer: _Peer) -> None:
        snapshot = self.engine.snapshot()
        message = {
            "type": "snapshot",
            "full": True,
            "count": len(snapshot.tasks),
            "tasks": [to_json(view) for view in snapshot.tasks],
            "rest": _rest(snapshot),
        }
        self._send(peer, message, force=True)
        # Deltas after this one are against the last push: make the next one whole
        # for everyone rather than keep a base per client.
        self._sent = None

    def _catch_up(self) -> None:
        """A client behind whose buffer drained gets a fresh snapshot; one behind
        too long is dropped."""
        now = time.monotonic()
        for peer in list(self._peers):
            if peer.streaming and self._stalled(peer, now):
                continue
            if peer.behind_since is None:
                continue
            if peer.buffered() <= self.high_water // 4:
                missed, peer.missed, peer.behind_since = peer.missed, 0, None
                self._send_full(peer)
                self._send(peer, {"type": "resync", "missed_events": missed}, force=True)
            elif now - peer.behind_since >= self.drop_after:
                self._drop(peer, f"this client fell behind for {self.drop_after:g}s")

    def _stalled(self, peer: _Peer, now: float) -> bool:
        """Drop a client that has read nothing of what it was sent for `drop_after`
        seconds (a stuck TUI must not keep a finished supervisor alive either)."""
        if peer.unread() == 0:
            peer.unread_since = None
            return False
        if peer.unread_since is None:
            peer.unread_since = now
            return False
        if now - peer.unread_since < self.drop_after:
            return False
        self._drop(peer, f"this client read nothing for {self.drop_after:g}s")
        return True

    def _drop(self, peer: _Peer, why: str) -> None:
        self.dropped += 1
        message = f"dropped: {why} ({peer.missed} events missed); attach again"
        self.say(f"client {peer.number} {message}")
        self._send(peer, {"type": "bye", "message": message}, force=True)
        self._close_peer(peer)
        with contextlib.suppress(Exception):
            peer.writer.transport.abort()

    def _send(self, peer: _Peer, message: dict[str, Any] | bytes, *, force: bool = False) -> None:
        """Queue `message` for `peer`, never waiting. Over its bound, only what
        must arrive (`force`: replies, hellos, goodbyes) is queued; the rest is
        counted as missed until the client catches up."""
        if peer.closed:
            return
        if peer.behind_since is not None and not force:
            peer.missed += 1
            return
        if not force and peer.buffered() > self.high_water:
            peer.behind_since = time.monotonic()
            peer.missed += 1
            return
        line = message if isinstance(message, bytes) else encode(message)
        try:
            peer.writer.write(line)
        except (ConnectionError, RuntimeError):
            self._close_peer(peer)


def _rest(snapshot: FleetSnapshot) -> dict[str, Any]:
    """Everything of a snapshot but its task views."""
    data: dict[str, Any] = to_json(dataclasses.replace(snapshot, tasks=()))
    del data["tasks"]
    return data
