"""The control socket's safety: a client of another uid is refused by peer
credentials whatever the file modes; a stalled client never stalls the run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

from conftest import must_have
from fleetdeck.config import build_fleet
from fleetdeck.engine import Engine
from fleetdeck.inprocess import InProcessClient
from fleetdeck.journal import Journal
from fleetdeck.lifecycle import RunLifecycle
from fleetdeck.remote.protocol import decode, encode
from fleetdeck.remote.server import ControlServer
from fleetdeck.remote.socket_client import SocketClient
from fleetdeck.testing import InstantExecutor
from remote_support import Supervisors, cli, supervisors, write_fleet
from sshd import TEST_USER, ensure_test_user

__all__ = ["supervisors"]

# A client with nothing but the standard library, run as another user: it reaches
# the socket through a directory fd it inherits (the test's temporary directories
# are root's alone), connects, and prints what the supervisor says.
_OTHER_CLIENT = """
import os, socket, sys
sock = socket.socket(socket.AF_UNIX)
try:
    sock.connect(f"/proc/self/fd/{sys.argv[1]}/control.sock")
except OSError as exc:
    print("connect:", exc.strerror)
    raise SystemExit(0)
print(sock.makefile("rb").readline().decode().strip())
"""


def _as_other_user(state: Path) -> str:
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None
    fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = subprocess.run(
            [python, "-I", "-c", _OTHER_CLIENT, str(fd)],
            user=TEST_USER,
            group=TEST_USER,
            extra_groups=[],
            pass_fds=(fd,),
            capture_output=True,
            text=True,
            timeout=30,
            cwd="/",
        )
    finally:
        os.close(fd)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_client_of_another_uid_is_refused_whatever_the_modes(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    # Skipped only outside CI (which runs as root and must run it).
    must_have("needs root to run a client as another user" if os.geteuid() != 0 else None)
    ensure_test_user()
    config = write_fleet(tmp_path, [{"id": "a", "script": "sleep 30"}])
    state = tmp_path / "state"
    supervisors.start(config)
    sock = state / "control.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    # As made: the modes keep the other user out before the supervisor is asked.
    assert _as_other_user(state) == "connect: Permission denied"
    # Opened wide by mistake: the supervisor still refuses by the peer's uid.
    state.chmod(0o755)
    sock.chmod(0o666)
    line = _as_other_user(state)
    message = decode(line.encode())
    assert message["type"] == "error"
    uid = int(subprocess.run(["id", "-u", TEST_USER], capture_output=True, text=True).stdout)
    assert message["message"] == (
        f"refused: this fleet belongs to uid {os.getuid()}, not to uid {uid} (the connecting user)"
    )
    assert "refused" in (state / "supervisor.log").read_text()
    # Its owner is still served.
    assert cli("pause", str(state)).returncode == 0


def _fleet(tmp_path: Path, tasks: int) -> object:
    return build_fleet(
        {
            "fleet": {"name": "stall", "state_dir": "state"},
            "agents": {"coder": {"command": ["true"], "slots": 8}},
            "tasks": [{"id": f"t{i:04d}", "agent": "coder"} for i in range(tasks)],
        },
        source="stall.toml",
        base_dir=tmp_path,
    )


async def test_a_stalled_client_does_not_stall_the_run_and_is_dropped(tmp_path: Path) -> None:
    """A client that says hello, takes the stream and never reads: the run goes
    to its end; the client's buffer stays bounded and it is dropped with a
    message, while a client that reads sees every change."""
    fleet = _fleet(tmp_path, 400)
    journal = Journal(tmp_path / "state")
    engine = Engine(fleet, journal=journal, executors={"local": InstantExecutor()})  # type: ignore[arg-type]
    client = InProcessClient(engine, what_if=False)
    lifecycle = RunLifecycle(engine)
    server = ControlServer(
        client, tmp_path / "state", high_water=16 * 1024, drop_after=0.5, push_seconds=0.05
    )
    loop = asyncio.get_running_loop()
    lifecycle.start()
    await server.start()
    # The stalled client: a socket nobody reads, with a small receive buffer.
    stalled = socket.socket(socket.AF_UNIX)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    await loop.sock_connect(stalled, str(server.path))
    stalled.sendall(encode({"type": "hello", "protocol": 1, "stream": True}))
    # A client that reads, in its own thread (as in an attached TUI's process).
    reader = await loop.run_in_executor(None, lambda: SocketClient.connect(tmp_path / "state"))
    result = await asyncio.wait_for(lifecycle.wait(), 60)
    assert result.exit_code == 0
    server.push()
    # The reading client sees the end; the stalled one was dropped, with a line in the log.
    for _ in range(200):
        snapshot = reader.snapshot()
        if snapshot.exit_code is not None:
            break
        await asyncio.sleep(0.05)
    assert snapshot.exit_code == 0 and snapshot.done == 400
    for _ in range(100):
        if server.dropped:
            break
        await asyncio.sleep(0.05)
    assert server.dropped == 1
    reader.close()
    stalled.close()
    await server.close()
    await lifecycle.close()
    journal.close()


async def test_a_client_that_falls_behind_gets_a_fresh_snapshot_when_it_reads_again(
    tmp_path: Path,
) -> None:
    fleet = _fleet(tmp_path, 2000)
    journal = Journal(tmp_path / "state")
    engine = Engine(fleet, journal=journal, executors={"local": InstantExecutor()})  # type: ignore[arg-type]
    client = InProcessClient(engine, what_if=False)
    lifecycle = RunLifecycle(engine)
    server = ControlServer(
        client, tmp_path / "state", high_water=16 * 1024, drop_after=60.0, push_seconds=0.05
    )
    loop = asyncio.get_running_loop()
    await server.start()
    slow = socket.socket(socket.AF_UNIX)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.setblocking(False)
    await loop.sock_connect(slow, str(server.path))
    await loop.sock_sendall(slow, encode({"type": "hello", "protocol": 1, "stream": True}))
    await asyncio.sleep(0.2)  # its first snapshot is sent; it reads nothing yet
    lifecycle.start()
    result = await asyncio.wait_for(lifecycle.wait(), 60)
    assert result.exit_code == 0
    server.push()
    # Now it reads everything: a resync comes, after a whole snapshot of the end.
    data = b""
    messages: list[dict[str, object]] = []
    for _ in range(400):
        with contextlib.suppress(TimeoutError):
            data += await asyncio.wait_for(loop.sock_recv(slow, 1 << 20), 0.1)
        *lines, data = data.split(b"\n")
        messages += [decode(line) for line in lines]
        if any(m["type"] == "resync" for m in messages):
            break
    resync = [m for m in messages if m["type"] == "resync"]
    assert resync and int(resync[0]["missed_events"]) > 0  # type: ignore[call-overload]
    index = messages.index(resync[0])
    whole = messages[index - 1]
    assert whole["type"] == "snapshot" and whole["full"] is True
    assert whole["rest"]["done"] == 2000  # type: ignore[index]
    assert server.dropped == 0
    slow.close()
    await server.close()
    await lifecycle.close()
    journal.close()
