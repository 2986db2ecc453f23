"""What the local and SSH executors share: attempt log files, whole writes, and
the operator's words for an attempt that cannot start."""

from __future__ import annotations

import os

from fleetdeck.executors.base import LaunchError


def open_log(path: str) -> int:
    """Open an attempt's log for appending (created private); raises LaunchError."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LaunchError(f"cannot open log {path}: {exc.strerror}") from None


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (os.write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def workdir_missing(cwd: str) -> str:
    """The launch error for a workdir that does not exist."""
    return f"workdir does not exist: {cwd}"


def command_not_found(command: str) -> str:
    """The launch error for a command that is not there."""
    return f"command not found: {command!r}"


def permission_denied(command: str) -> str:
    """The launch error for a command that cannot be executed."""
    return f"permission denied running {command!r}"
