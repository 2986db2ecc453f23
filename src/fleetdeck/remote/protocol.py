"""The control socket's protocol: JSON lines, versioned (see docs/protocol.md).

Every message is one JSON object on one line, with a `type`. The supervisor
speaks first (`hello`, with the versions it speaks); the client answers with
its own `hello` and the version it chose; from then on the client sends
requests (`{"type": "request", "id": N, "op": ..., "args": {...}}`) and the
supervisor answers each one (`{"type": "reply", "id": N, "ok": true, "value":
...}` or `"ok": false, "error": "..."`), and, to a client that asked for the
stream, pushes `snapshot` (whole, or the task views that changed), `event` and
`resync` messages in between. A reply is sent after the snapshot that shows its
command's effect, so a client that reads in order sees it at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fleetdeck.model import Event, EventKind

# The version this fleetdeck speaks. A change a client of the previous version
# would misread gets a new number; adding a message type or a field does not.
PROTOCOL = 1
SUPPORTED = (PROTOCOL,)

# The socket, in the state directory (0600, in the 0700 directory).
SOCKET_NAME = "control.sock"
# The supervisor's output, when it runs detached.
LOG_NAME = "supervisor.log"

# A line longer than this is not a message (a 10,000-task snapshot is ~3 MB).
MAX_LINE = 256 * 1024 * 1024


class ProtocolError(Exception):
    """A message that does not follow the protocol, or a peer that speaks another version."""


def encode(message: dict[str, Any]) -> bytes:
    """One message as its line."""
    return json.dumps(message, separators=(",", ":"), default=_default).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One line as its message (ProtocolError if it is not one)."""
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("a message is a JSON object with a 'type'")
    return message


def _default(value: Any) -> Any:
    # Event data holds enum members (a stage, an outcome): their values.
    if hasattr(value, "value"):
        return value.value
    return str(value)


def event_json(event: Event) -> dict[str, Any]:
    """An event as the `event` message carries it."""
    return {"ts": event.ts, "kind": event.kind.value, "task": event.task, "data": event.data}


def event_from_json(data: dict[str, Any]) -> Event:
    """The event an `event` message carries (its data as JSON values: enums as strings)."""
    return Event(
        ts=float(data["ts"]),
        kind=EventKind(data["kind"]),
        task=data.get("task"),
        data=dict(data.get("data") or {}),
    )


def version_problem(theirs: Any, *, peer: str) -> str | None:
    """Why a peer speaking protocol `theirs` cannot be talked to (None if it can)."""
    if theirs in SUPPORTED:
        return None
    newer = isinstance(theirs, int) and theirs > PROTOCOL
    which = "a newer" if newer else "an older"
    return (
        f"the {peer} speaks control protocol {theirs!r} ({which} fleetdeck); this fleetdeck "
        f"speaks {PROTOCOL}: use the same fleetdeck version on both ends"
    )


def socket_path(state_dir: str | os.PathLike[str]) -> Path:
    """The control socket of the supervisor of `state_dir`."""
    return Path(state_dir) / SOCKET_NAME


# A Unix socket's path must fit in sun_path (108 bytes on Linux, with its NUL).
_SUN_PATH = 107


def bindable(path: Path) -> tuple[str, int | None]:
    """A name for `path` short enough for a socket call, and the directory's fd
    that name goes through (to close after the call), if one was needed."""
    text = os.fsencode(path)
    if len(text) <= _SUN_PATH:
        return str(path), None
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{path.name}", fd
