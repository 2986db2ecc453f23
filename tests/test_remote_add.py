"""`fleetdeck add`: tasks added to a fleet running in the background (real
supervisor processes, real agents, the real journal), refused with the config's
messages when bad, and still there after the supervisor is killed."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from remote_support import Supervisors, alive, cli, supervisors, wait_until, write_fleet

__all__ = ["supervisors"]


def _task_states(state: Path) -> dict[str, str]:
    """Each task's state, as the supervisor's snapshot has it."""
    from fleetdeck.remote.socket_client import SocketClient

    client = SocketClient.connect(state, stream=False)
    try:
        return {task.id: task.state.value for task in client.snapshot().tasks}
    finally:
        client.close()


def _report_states(state: Path) -> dict[str, str]:
    result = cli("report", str(state), "--json")
    assert result.returncode == 0, result.stderr
    return {task["task"]: task["state"] for task in json.loads(result.stdout)["tasks"]}


def test_tasks_added_to_a_running_fleet_run_and_survive_a_kill(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    gate = tmp_path / "gate"
    config = write_fleet(
        tmp_path,
        [
            {"id": "first", "script": "echo first"},
            {"id": "hold", "script": f"while [ ! -e {gate} ]; do sleep 0.05; done"},
        ],
        slots=3,
    )
    state = tmp_path / "state"
    pid = supervisors.start(config)
    wait_until(lambda: _task_states(state).get("first") == "succeeded", what="first done")

    # With flags: depends on a finished task, so it is ready at once and runs.
    out = tmp_path / "new.out"
    added = cli(
        "add", str(state), "--id", "new", "--agent", "coder",
        "--prompt", f"echo new > {out}", "--depends-on", "first",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout == "new: added\n"
    wait_until(lambda: _task_states(state).get("new") == "succeeded", what="new done")
    assert out.read_text() == "new\n"

    # From stdin: one waits for a task still running, another for it.
    fragment = (
        '[[tasks]]\nid = "after-hold"\nagent = "coder"\nprompt = "echo after"\n'
        'depends_on = ["hold"]\n\n'
        '[[tasks]]\nid = "last"\nagent = "coder"\ndepends_on = ["after-hold", "new"]\n'
        "priority = 3\nretries = 1\ntimeout = 60\n"
    )
    added = cli("add", str(state), "-", stdin=fragment)
    assert added.returncode == 0, added.stderr
    assert added.stdout == "after-hold: added\nlast: added\n"
    states = _task_states(state)
    assert states["hold"] == "running"
    assert states["after-hold"] == "pending" and states["last"] == "pending"

    # A bad one: the config's message, exit 2, nothing changed.
    before = _task_states(state)
    for args, stdin, message in (
        (
            ["--id", "x", "--agent", "codr"],
            None,
            "fleetdeck: add: <command line>: tasks[0].agent: unknown agent 'codr' "
            "(did you mean 'coder'?); defined agents: coder\n",
        ),
        (
            ["--id", "x", "--agent", "coder", "--depends-on", "hodl"],
            None,
            "fleetdeck: add: <command line>: tasks[0].depends_on: task 'x' depends on "
            "unknown task 'hodl' (did you mean 'hold'?)\n",
        ),
        (
            ["-"],
            '[[tasks]]\nid = "hold"\nagent = "coder"\n',
            "fleetdeck: add: <stdin>: tasks[0].id: duplicate task id 'hold' "
            "(first used by tasks[1])\n",
        ),
        (
            ["-"],
            '[[tasks]]\nid = "p"\nagent = "coder"\ndepends_on = ["q"]\n'
            '[[tasks]]\nid = "q"\nagent = "coder"\ndepends_on = ["p"]\n',
            "fleetdeck: add: <stdin>: tasks[0].depends_on: dependency cycle: p -> q -> p\n",
        ),
        (
            ["--agent", "coder"],
            None,
            "fleetdeck: add: --id needed (or `-` and [[tasks]] TOML on stdin)\n",
        ),
    ):
        refused = cli("add", str(state), *args, stdin=stdin)
        assert refused.returncode == 2, refused.stdout
        assert refused.stderr == message
    assert _task_states(state) == before

    # Killed (no clean stop): started again, the run goes on with the added tasks.
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), what="the supervisor is gone")
    pid = supervisors.start(config)
    states = _task_states(state)
    assert list(states) == ["first", "hold", "new", "after-hold", "last"]
    assert states["new"] == "succeeded" and states["after-hold"] == "pending"
    gate.touch()
    wait_until(lambda: not alive(pid), what="the resumed run ends")
    assert _report_states(state) == {
        "first": "succeeded",
        "hold": "succeeded",
        "new": "succeeded",
        "after-hold": "succeeded",
        "last": "succeeded",
    }
