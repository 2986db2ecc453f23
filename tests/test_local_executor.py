"""The local executor on its own: exit statuses, logs, launch errors, tree kills."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from conftest import PYTHON, alive, read_pids, wait_dead
from fleetdeck.executors.base import LaunchError, LaunchRequest
from fleetdeck.executors.local import LocalExecutor
from fleetdeck.model import Stage


def request(tmp_path: Path, argv: list[str], **overrides: object) -> LaunchRequest:
    fields: dict[str, object] = {
        "attempt_id": 1,
        "task": "t",
        "stage": Stage.AGENT,
        "number": 1,
        "argv": tuple(argv),
        "env": {"FLEETDECK_TASK": "t"},
        "cwd": str(tmp_path),
        "log_path": str(tmp_path / "t.log"),
        "output_path": str(tmp_path / "t.out"),
        "inputs_path": str(tmp_path / "t.inputs.json"),
        "inputs": {"dep": "its output"},
    }
    fields.update(overrides)
    return LaunchRequest(**fields)  # type: ignore[arg-type]


async def test_exit_status_log_and_inputs(tmp_path: Path) -> None:
    executor = LocalExecutor(grace=0.5)
    script = 'cat "$FLEETDECK_INPUTS"; echo; echo to-stderr >&2; exit 7'
    process = await executor.start(request(tmp_path, ["sh", "-c", script]))
    assert await process.wait() == 7
    await executor.aclose()
    assert (tmp_path / "t.log").read_text() == '{"dep": "its output"}\nto-stderr\n'


async def test_a_signal_death_is_a_negative_status(tmp_path: Path) -> None:
    executor = LocalExecutor(grace=0.5)
    process = await executor.start(request(tmp_path, ["sh", "-c", "kill -USR1 $$"]))
    assert await process.wait() == -signal.SIGUSR1
    await executor.aclose()


async def test_each_attempt_runs_in_its_own_session(tmp_path: Path) -> None:
    executor = LocalExecutor(grace=0.5)
    process = await executor.start(request(tmp_path, ["sleep", "5"]))
    assert process.pid is not None
    assert os.getsid(process.pid) == process.pid
    assert os.getpgid(process.pid) == process.pid
    await process.stop(0.5)
    assert await process.wait() == -signal.SIGTERM
    await executor.aclose()


@pytest.mark.parametrize(
    ("argv", "cwd", "message"),
    [
        (
            ["surely-not-installed-anywhere"],
            None,
            "command not found: 'surely-not-installed-anywhere'",
        ),
        (["true"], "/no/such/dir", "workdir does not exist: /no/such/dir"),
        (["./not-executable"], None, "permission denied running './not-executable'"),
    ],
)
async def test_launch_errors_name_the_problem(
    tmp_path: Path, argv: list[str], cwd: str | None, message: str
) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    (tmp_path / "not-executable").chmod(0o644)
    executor = LocalExecutor(grace=0.5)
    overrides = {} if cwd is None else {"cwd": cwd}
    with pytest.raises(LaunchError) as caught:
        await executor.start(request(tmp_path, argv, **overrides))
    assert str(caught.value) == message
    await executor.aclose()


async def test_stop_kills_setsid_and_sigterm_ignoring_descendants(
    tmp_path: Path, tree_agent: Path
) -> None:
    pidfile = tmp_path / "pids"
    executor = LocalExecutor(grace=0.3)
    process = await executor.start(request(tmp_path, [PYTHON, str(tree_agent), str(pidfile)]))
    ready = Path(f"{pidfile}.ready")
    while not ready.exists():
        await asyncio.sleep(0.02)
    pids = read_pids(pidfile)
    assert len(pids) == 4
    await process.stop(0.3)
    assert [pid for pid in pids if alive(pid)] == []
    await executor.aclose()


async def test_leftovers_in_the_group_are_stopped_after_a_normal_exit(tmp_path: Path) -> None:
    """`sleep 60 &` then exit 0: the attempt is over, so is its background child."""
    pidfile = tmp_path / "bg"
    executor = LocalExecutor(grace=0.3)
    script = f"sleep 60 & echo $! > {pidfile}; exit 0"
    process = await executor.start(request(tmp_path, ["sh", "-c", script]))
    assert await process.wait() == 0
    background = int(pidfile.read_text())
    await executor.aclose()
    assert not alive(background)


DOUBLE_FORK = r"""
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(sys.argv[1], "w") as f:
            f.write(f"{os.getpid()}\n")
        while True:
            time.sleep(1)
    os._exit(0)
os.wait()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
"""


def test_a_double_forked_daemon_is_adopted_and_stopped(tmp_path: Path) -> None:
    """Escaping both group and parentage only works against a supervisor that is
    not a subreaper. Run in a child interpreter, since becoming a subreaper is for
    the whole process."""
    daemon = tmp_path / "daemon.py"
    daemon.write_text(DOUBLE_FORK)
    pidfile = tmp_path / "daemon.pid"
    driver = tmp_path / "driver.py"
    driver.write_text(
        f"""
import asyncio, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from fleetdeck.executors.local import LocalExecutor
from fleetdeck.executors.proctree import become_subreaper
from test_local_executor import request
from pathlib import Path

async def main():
    assert become_subreaper()
    executor = LocalExecutor(grace=0.3, adopt_orphans=True)
    process = await executor.start(
        request(Path({str(tmp_path)!r}), [{PYTHON!r}, {str(daemon)!r}, {str(pidfile)!r}])
    )
    assert await process.wait() == 0
    await executor.aclose()

asyncio.run(main())
"""
    )
    import subprocess

    done = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = int(pidfile.read_text())
    assert wait_dead([pid], timeout=2.0) == [], "the double-forked daemon survived"
