"""Every run is reachable: the in-process `fleetdeck run` (headless or TUI)
serves the control socket beside its own view, is listed by `ps`, is steered by
the script commands, takes a second screen, notifies, and leaves nothing behind
(real `fleetdeck run` processes, real agents, real sockets, a real journal)."""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import must_have
from fleetdeck.config import load_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors import build_executors
from fleetdeck.headless import HeadlessView
from fleetdeck.inprocess import InProcessClient
from fleetdeck.journal import Journal
from fleetdeck.lifecycle import RunLifecycle
from fleetdeck.model import TaskState
from fleetdeck.remote.hosted import HostedRun
from fleetdeck.remote.protocol import decode
from fleetdeck.remote.socket_client import RemoteRun, SocketClient
from fleetdeck.remote.supervise import registered
from fleetdeck.tui.app import FleetApp
from remote_support import Supervisors, alive, cli, supervisors, wait_until, write_fleet
from tui_support import until

__all__ = ["supervisors"]


class Hook(http.server.BaseHTTPRequestHandler):
    posts: list[dict[str, object]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.posts.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A real HTTP server on 127.0.0.1 that keeps what is posted to it."""
    posts: list[dict[str, object]] = []
    handler = type("Kept", (Hook,), {"posts": posts})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", posts
    server.shutdown()
    server.server_close()


def _notifying(config: Path, told: Path, url: str, interval: float = 120.0) -> None:
    config.write_text(
        config.read_text().replace(
            "[fleet]\n",
            "[fleet]\n"
            f'notify = ["sh", "-c", "echo \\"$0\\" >> {told}", "{{message}}"]\n'
            f'notify_url = "{url}"\n'
            f"notify_interval = {interval}\n",
        )
    )


def _run(config: Path, *extra: str) -> subprocess.Popen[str]:
    """`fleetdeck run CONFIG --no-tui` in a process of its own (a terminal's run)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fleetdeck", "run", str(config), "--no-tui", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=config.parent,
        start_new_session=True,
    )


def _json(*args: str) -> dict[str, object]:
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_a_headless_run_is_listed_steered_attached_and_tells(
    tmp_path: Path, supervisors: Supervisors, hook: tuple[str, list[dict[str, object]]]
) -> None:
    url, posts = hook
    gate, fixed, told = tmp_path / "gate", tmp_path / "fixed", tmp_path / "told"
    config = write_fleet(
        tmp_path,
        [
            {"id": "long", "script": f"while [ ! -f {gate} ]; do sleep 0.05; done"},
            {"id": "flaky", "script": f"echo trying; test -f {fixed}"},
            {"id": "after", "depends_on": ["flaky"]},
        ],
    )
    _notifying(config, told, url)
    state = tmp_path / "state"
    run = _run(config)
    supervisors.note(run.pid)
    try:
        wait_until(lambda: (state / "control.sock").exists(), what="the socket")
        # ps lists the terminal's run, as a background one.
        listed = _json("ps", "--json")
        assert listed["state_dir"] == str(state.resolve())
        assert listed["pid"] == run.pid

        # status, logs: the failure and what it blocked need the operator.
        def attention() -> list[object]:
            return [a["task"] for a in _json("status", str(state), "--json")["attention"]]  # type: ignore[attr-defined]

        wait_until(lambda: "flaky" in attention(), what="flaky fails")
        logs = cli("logs", str(state), "flaky")
        assert logs.returncode == 0 and logs.stdout.strip() == "trying", logs
        # A second view: the stream of a streaming client, as `attach` takes it.
        view = SocketClient.connect(state, stream=True)
        try:
            assert view.hello["pid"] == run.pid
            states = {task.id: task.state for task in view.snapshot().tasks}
            assert states["flaky"] is TaskState.FAILED
            assert states["after"] is TaskState.BLOCKED
            # Commands from a script: pause, resume, and retry the fixed task.
            assert cli("pause", str(state)).returncode == 0
            assert view.snapshot().paused
            assert cli("resume", str(state)).returncode == 0
            fixed.touch()
            assert cli("retry", str(state), "flaky").returncode == 0
            wait_until(
                lambda: (
                    {t.id: t.state for t in view.snapshot().tasks}["after"] is TaskState.SUCCEEDED
                ),
                what="flaky and after succeed on the retry",
            )
        finally:
            view.close()
        gate.touch()
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
            run.wait(timeout=30)
    assert run.returncode == 0, err
    # Nothing left: the socket, the registry entry.
    assert not (state / "control.sock").exists()
    assert list(registered()) == []
    # Told: the failure and what it blocked, at once; the end, gathered after.
    lines = told.read_text().splitlines()
    assert lines == [
        "fleetdeck bg: 1 task failed: flaky; 1 task blocked",
        "fleetdeck bg: run finished (exit 0)",
    ], lines
    assert [post["text"] for post in posts] == lines


def test_fleetdeck_stop_stops_a_terminals_run_cleanly(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    config = write_fleet(tmp_path, [{"id": "long", "script": "sleep 60"}])
    state = tmp_path / "state"
    run = _run(config)
    supervisors.note(run.pid)
    wait_until(lambda: (state / "control.sock").exists(), what="the socket")
    wait_until(lambda: _json("status", str(state), "--json")["in_flight"] == 1, what="running")
    result = cli("stop", str(state))
    assert result.returncode == 0, result.stderr
    assert "stopped (exit 130)" in result.stdout
    _, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert not (state / "control.sock").exists()
    assert cli("status", str(state)).returncode == 2


async def test_the_in_process_tui_serves_the_socket_and_rings(tmp_path: Path) -> None:
    """The TUI's own run, in this process: a script steers it through the socket
    while its screen shows the effect, and a failure rings the screen once."""
    config = write_fleet(
        tmp_path,
        [{"id": f"bad{i}", "script": "exit 1"} for i in range(3)]
        + [{"id": "long", "script": "sleep 60"}],
        slots=4,
    )
    fleet = load_fleet(config)
    state = tmp_path / "state"
    journal = Journal(state)
    engine = Engine(fleet, journal=journal, executors=build_executors(fleet))
    client = InProcessClient(engine)
    hosted = HostedRun(client, RunLifecycle(engine), state_dir=state, config=str(config))
    app = FleetApp(client, hosted)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(lambda: hosted.server is not None, timeout=20)
            await until(lambda: sum(t.state is TaskState.FAILED for t in engine.tasks()) == 3)
            # A burst of three failures rang once (the bell and OSC 9).
            await pilot.pause(0.3)
            assert app.rings == 1
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fleetdeck", "pause", str(state),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await process.communicate()
            assert process.returncode == 0, err
            assert app.client.snapshot().paused
            # Another screen, attached (its client in a thread of its own).
            other = await asyncio.to_thread(SocketClient.connect, state, stream=True)
            try:
                assert other.snapshot().paused
                assert {a.task for a in other.snapshot().attention} == {"bad0", "bad1", "bad2"}
            finally:
                other.close()
            await pilot.press("q")
            await pilot.press("y")
            await until(lambda: hosted.finished, timeout=30)
            await pilot.pause(0.2)
    finally:
        journal.close()
    assert hosted.server is None
    assert not (state / "control.sock").exists()


async def test_an_attached_screen_rings_once_for_what_still_needs_attention(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    config = write_fleet(
        tmp_path, [{"id": "bad", "script": "exit 1"}, {"id": "long", "script": "sleep 60"}]
    )
    state = tmp_path / "state"
    supervisors.start(config)
    wait_until(lambda: bool(_json("status", str(state), "--json")["attention"]), what="bad fails")
    client = SocketClient.connect(state, stream=True)
    app = FleetApp(client, RemoteRun(client), attached=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        assert app.rings == 1
        await pilot.press("q")
    assert alive(supervisors.pids[0])


def test_a_terminals_run_refuses_a_client_of_another_uid(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    # Skipped only outside CI (which runs as root and must run it).
    must_have("needs root to run a client as another user" if os.geteuid() != 0 else None)
    from sshd import TEST_USER, ensure_test_user
    from test_remote_safety import _as_other_user  # the client run as another user

    ensure_test_user()
    config = write_fleet(tmp_path, [{"id": "a", "script": "sleep 30"}])
    state = tmp_path / "state"
    run = _run(config)
    supervisors.note(run.pid)
    try:
        wait_until(lambda: (state / "control.sock").exists(), what="the socket")
        sock = state / "control.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        # Opened wide by mistake: the run still refuses by the peer's uid.
        state.chmod(0o755)
        sock.chmod(0o666)
        message = decode(_as_other_user(state).encode())
        uid = int(subprocess.run(["id", "-u", TEST_USER], capture_output=True, text=True).stdout)
        assert message == {
            "type": "error",
            "message": f"refused: this fleet belongs to uid {os.getuid()}, "
            f"not to uid {uid} (the connecting user)",
        }
        # Said in the run's control log, not over its screen; its owner is still served.
        assert "refused" in (state / "control.log").read_text()
        assert cli("pause", str(state)).returncode == 0
        assert cli("stop", str(state), "--now").returncode == 0
        run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
            run.wait(timeout=30)


async def test_a_headless_view_attached_over_the_socket_shows_a_failed_attempts_log(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    """No run directory at hand (another process's run): the failed attempt's log
    path and last lines come from the client, as in-process."""
    gate = tmp_path / "gate"
    script = f"while [ ! -f {gate} ]; do sleep 0.05; done; echo boom; exit 3"
    wait = f"while [ ! -f {gate}.2 ]; do sleep 0.05; done"
    config = write_fleet(tmp_path, [{"id": "bad", "script": script}, {"id": "on", "script": wait}])
    state = tmp_path / "state"
    run = _run(config)
    supervisors.note(run.pid)
    try:
        await asyncio.to_thread(
            wait_until, lambda: (state / "control.sock").exists(), what="the socket"
        )
        client = await asyncio.to_thread(SocketClient.connect, state, stream=True)
        out = io.StringIO()
        view = HeadlessView(out, logs=client)  # no run_dirs
        client.subscribe(view)
        gate.touch()
        await until(lambda: "| boom" in out.getvalue(), timeout=30)
        client.close()
        Path(f"{gate}.2").touch()
        log = str(state.resolve() / "runs" / "1" / "bad.1.agent.log")
        assert f"log {log}, last lines:" in out.getvalue()
        await asyncio.to_thread(run.communicate, timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
            run.wait(timeout=30)
