"""The real TUI attached to a real supervisor process through its socket:
what it shows, every key, two screens at once, and q leaving the fleet running."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import Log

from fleetdeck.model import TaskState
from fleetdeck.remote.socket_client import RemoteRun, SocketClient
from fleetdeck.tui.app import FleetApp
from fleetdeck.tui.confirm import ConfirmScreen
from fleetdeck.tui.detail import TaskDetailScreen
from fleetdeck.tui.header import FleetHeader
from fleetdeck.tui.queue import QueueTable
from fleetdeck.tui.timeline import TimelineScreen
from remote_support import Supervisors, alive, cli, supervisors, wait_until, write_fleet
from tui_support import until

__all__ = ["supervisors"]


def _state(client: SocketClient, task: str) -> TaskState:
    return next(view.state for view in client.snapshot().tasks if view.id == task)


def _status(state: Path) -> dict[str, object]:
    result = cli("status", str(state), "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


async def test_attached_tui_shows_the_fleet_and_every_key_works_through_the_socket(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    gate = tmp_path / "gate"
    wait_gate = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    config = write_fleet(
        tmp_path,
        [
            {"id": "flaky", "script": f"echo attempt; test -e {tmp_path}/fixed || exit 1"},
            {"id": "long", "script": f"echo long is working; {wait_gate}"},
            {"id": "doomed", "script": f"{wait_gate}"},
            {"id": "broken", "script": "exit 2"},
            {"id": "after", "script": "true", "depends_on": ["long"]},
        ],
        slots=4,
    )
    state = tmp_path / "state"
    pid = supervisors.start(config)
    client = SocketClient.connect(state)
    other = SocketClient.connect(state)  # a second screen, attached at the same time
    app = FleetApp(client, RemoteRun(client), attached=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: _state(client, "flaky") is TaskState.FAILED)
        await until(lambda: _state(client, "broken") is TaskState.FAILED)
        await pilot.pause(0.3)
        # The screen shows the supervisor's state: the tasks, and the header's name.
        table = app.query_one(QueueTable)
        assert app.selected_task() is not None
        assert "bg" in str(app.query_one(FleetHeader).render())
        shown = {task.id for task in client.snapshot().tasks}
        assert shown == {"flaky", "long", "doomed", "broken", "after"}
        assert table.row_count > 0

        # p: pause, seen by the supervisor and by the other screen.
        await pilot.press("p")
        assert client.snapshot().paused  # the reply came after the snapshot that shows it
        await until(lambda: other.snapshot().paused)
        assert _status(state)["paused"] is True
        await pilot.press("p")
        assert not client.snapshot().paused

        # s: the next policy.
        before = client.snapshot().policy
        await pilot.press("s")
        assert client.snapshot().policy != before
        await pilot.press("s", "s", "s")  # around the registry, whatever its size
        while client.snapshot().policy != before:
            await pilot.press("s")

        # r on the failed task (selected by the attention queue first, or moved to).
        (tmp_path / "fixed").touch()
        while app.selected_task() != "flaky":
            await pilot.press("j")
        await pilot.press("r")
        await until(lambda: _state(client, "flaky") is TaskState.SUCCEEDED)

        # enter: the detail screen, its log read by the supervisor.
        while app.selected_task() != "long":
            await pilot.press("k" if app.selected_task() in ("after", "doomed") else "j")
        await pilot.press("enter")
        assert isinstance(app.screen, TaskDetailScreen)
        log = app.screen.query_one("#log", Log)
        await until(lambda: "long is working" in log.lines)
        await pilot.press("escape")
        # t: the timeline, from the supervisor's attempts.
        await pilot.press("t")
        assert isinstance(app.screen, TimelineScreen)
        await pilot.press("escape")

        # c y: cancel a task through the socket.
        while app.selected_task() != "doomed":
            await pilot.press("j")
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(lambda: _state(client, "doomed") is TaskState.CANCELLED)
        # x: a failed task is seen, it leaves the attention queue.
        assert any(a.task == "broken" for a in client.snapshot().attention)
        while app.selected_task() != "broken":
            await pilot.press("j")
        await pilot.press("x")
        assert not any(a.task == "broken" for a in client.snapshot().attention)

        # q detaches at once: no question, the fleet goes on.
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert alive(pid)
    assert _state(other, "long") is TaskState.RUNNING
    assert other.gone is None

    # A second screen: Q stops the fleet itself, once confirmed.
    app2 = FleetApp(other, RemoteRun(other), attached=True)
    async with app2.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        await pilot.press("Q")
        assert isinstance(app2.screen, ConfirmScreen)
        await pilot.press("y")
        await until(lambda: app2.lifecycle.finished, timeout=20)
        assert app2.lifecycle.result is not None
        assert app2.lifecycle.result.exit_code == 130
        # The end rang the attached screen (bell and OSC 9).
        await until(lambda: app2.rings == 1)
        await pilot.press("q")
    wait_until(lambda: not alive(pid), what="the supervisor goes with the last screen")


async def test_an_old_or_new_client_is_told_in_one_line(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    import socket

    from fleetdeck.remote.protocol import decode, encode

    config = write_fleet(tmp_path, [{"id": "a", "script": "sleep 30"}])
    state = tmp_path / "state"
    supervisors.start(config)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(state / "control.sock"))
    reader = sock.makefile("rb")
    hello = decode(reader.readline())
    assert hello["type"] == "hello" and hello["protocol"] == 1
    sock.sendall(encode({"type": "hello", "protocol": 2}))
    answer = decode(reader.readline())
    assert answer == {
        "type": "error",
        "message": "the client speaks control protocol 2 (a newer fleetdeck); this fleetdeck "
        "speaks 1: use the same fleetdeck version on both ends",
    }
    assert reader.readline() == b""  # and closed
    reader.close()
    sock.close()
    assert cli("status", str(state)).returncode == 0  # the supervisor is unharmed


async def test_the_what_if_is_answered_through_the_socket(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    from fleetdeck.policy import POLICY_NAMES

    config = write_fleet(tmp_path, [{"id": "a", "script": "sleep 30"}, {"id": "b"}])
    # An estimate: a prediction needs no attempt to have ended.
    config.write_text(
        config.read_text().replace('prompt = "sleep 30"', 'prompt = "sleep 30"\nestimate = 30')
    )
    supervisors.start(config)
    client = SocketClient.connect(tmp_path / "state", stream=False)
    try:
        assert client.what_if_available
        predicted = await client.what_if()
        assert set(predicted) == set(POLICY_NAMES)
        assert all(seconds > 0 for seconds in predicted.values())
    finally:
        client.close()
