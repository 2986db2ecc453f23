"""The local executor on its own: sessions, the shim, recovery, tree kills.

What every executor must do (exit statuses, logs, variables, inputs and output,
launch errors, stop) is in test_executor_conformance.py, run against this one too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path

import psutil
import pytest

from conftest import PYTHON, alive, read_pids, wait_dead
from fleetdeck.executors.base import AttemptProcess, LaunchError, LaunchRequest
from fleetdeck.executors.local import LocalExecutor
from fleetdeck.executors.proctree import process_start_time
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


async def test_each_attempt_runs_in_its_own_session(tmp_path: Path) -> None:
    executor = LocalExecutor(grace=0.5)
    process = await executor.start(request(tmp_path, ["sleep", "5"]))
    assert process.pid is not None
    assert os.getsid(process.pid) == process.pid
    assert os.getpgid(process.pid) == process.pid
    await process.stop(0.5)
    assert await process.wait() == -signal.SIGTERM
    await executor.aclose()


async def test_a_command_that_is_not_executable_is_a_launch_error(tmp_path: Path) -> None:
    """Relative to the workdir (the other launch errors: test_executor_conformance.py)."""
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    (tmp_path / "not-executable").chmod(0o644)
    executor = LocalExecutor(grace=0.5)
    with pytest.raises(LaunchError) as caught:
        await executor.start(request(tmp_path, ["./not-executable"]))
    assert str(caught.value) == "permission denied running './not-executable'"
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


async def test_the_shim_leads_the_session_and_records_the_exit_status(tmp_path: Path) -> None:
    """Attempts of a run share its status file, one line each; the command runs
    in the attempt's workdir."""
    executor = LocalExecutor(grace=0.5)
    workdir = tmp_path / "work"
    workdir.mkdir()
    first = await executor.start(
        request(tmp_path, ["sh", "-c", "pwd; sleep 0.2; exit 7"], cwd=str(workdir))
    )
    assert first.pid is not None
    shim = psutil.Process(first.pid).cmdline()
    assert shim[0] == "/bin/sh" and shim[-3:] == ["sh", "-c", "pwd; sleep 0.2; exit 7"]
    assert os.getsid(first.pid) == first.pid
    second = await executor.start(
        request(tmp_path, ["true"], attempt_id=2, log_path=str(tmp_path / "t2.log"))
    )
    assert await first.wait() == 7
    assert await second.wait() == 0
    assert sorted((tmp_path / "status").read_text().splitlines()) == ["1 7", "2 0"]
    assert stat.S_IMODE((tmp_path / "status").stat().st_mode) == 0o600
    assert (tmp_path / "t.log").read_text() == f"{workdir}\n"
    await executor.aclose()


def test_a_recorded_status_is_read_from_whole_lines_only(tmp_path: Path) -> None:
    """The shared file, an attempt's own file (older fleetdeck), a cut last line."""
    from fleetdeck.executors.local import read_status

    shared = tmp_path / "status"
    shared.write_text("1 0\n12 3\n2 130\n3 1")  # attempt 3's line is not finished
    assert [read_status(str(shared), n) for n in (1, 2, 3, 4, 12)] == [0, -2, None, None, 3]
    own = tmp_path / "t.1.agent.status"
    own.write_text("5\n")
    assert read_status(str(own), 99) == 5
    own.write_text("5")
    assert read_status(str(own), 99) is None
    assert read_status(str(tmp_path / "missing"), 1) is None


async def test_redacted_variables_are_masked_in_the_log(tmp_path: Path) -> None:
    """Redaction runs the Python shim, whose output passes through it."""
    executor = LocalExecutor(grace=0.5)
    # The secret also comes split over two writes, as a slow agent may print it.
    script = (
        'echo "token=$TOKEN key=$KEY"; printf "half %s" "${TOKEN%%-*}"; sleep 0.1; '
        'printf -- "-%s end\\n" "${TOKEN#*-}"; echo "$TOKEN" >&2; echo "empty=[$EMPTY]"'
    )
    env = {"TOKEN": "s3cr3t-v4lue", "KEY": "k3y", "EMPTY": ""}
    process = await executor.start(
        request(
            tmp_path,
            ["sh", "-c", script],
            env=env,
            redact=("TOKEN", "KEY", "EMPTY", "NOT_SET"),
        )
    )
    assert process.pid is not None
    # Names only on the command line: `ps` never shows a value.
    assert "s3cr3t-v4lue" not in " ".join(psutil.Process(process.pid).cmdline())
    assert await process.wait() == 0
    assert (tmp_path / "status").read_text() == "1 0\n"
    await executor.aclose()
    assert (tmp_path / "t.log").read_text() == ("token=*** key=***\nhalf *** end\n***\nempty=[]\n")


async def test_an_attempt_outlives_its_supervisor_and_is_found_again(tmp_path: Path) -> None:
    """A second executor (a restarted supervisor) reattaches to a running attempt,
    waits for it, and later reads the status of one that ended meanwhile."""
    from fleetdeck.model import Attempt

    attempt = Attempt(
        attempt_id=1, task="t", stage=Stage.AGENT, number=1, worker="w", host="local",
        run_dir=str(tmp_path),
    )  # fmt: skip
    first = LocalExecutor(grace=0.5)
    started = await first.start(
        request(
            tmp_path,
            ["sh", "-c", "sleep 0.5; exit 3"],
            log_path=attempt.log_path,
            output_path=attempt.output_path,
            status_path=attempt.status_path,
        )
    )
    # The start time is not read at launch: the marks in the shim's environment
    # (attempt id, output file) tell it from any other process.
    attempt.pid, attempt.pid_started = started.pid, started.pid_started
    assert attempt.pid_started is None
    second = LocalExecutor(grace=0.5)
    found = await second.recover(attempt)
    assert isinstance(found, AttemptProcess)
    assert await found.wait() == 3
    assert await second.recover(attempt) == 3  # ended: its recorded status
    Path(attempt.status_path).unlink()
    assert await second.recover(attempt) is None  # gone without a status: lost
    # A process with the same pid but another attempt's marks is someone else's.
    other = await first.start(request(tmp_path, ["sleep", "5"], attempt_id=2))
    assert other.pid is not None
    stranger = Attempt(
        attempt_id=1, task="t", stage=Stage.AGENT, number=1, worker="w", host="local",
        run_dir=str(tmp_path), pid=other.pid,
    )  # fmt: skip
    assert await second.recover(stranger) is None
    assert alive(other.pid), "someone else's process was stopped"
    # Nor is a process that started at another time than the journal says (a
    # start time journaled by an older fleetdeck).
    stranger.pid_started = (process_start_time(other.pid) or 0) - 60
    assert await second.recover(stranger) is None
    await other.stop(0.5)
    await first.aclose()
    await second.aclose()


async def test_a_reattached_attempt_is_stopped_with_its_whole_tree(
    tmp_path: Path, tree_agent: Path
) -> None:
    from fleetdeck.model import Attempt

    attempt = Attempt(
        attempt_id=1, task="t", stage=Stage.AGENT, number=1, worker="w", host="local",
        run_dir=str(tmp_path),
    )  # fmt: skip
    pidfile = tmp_path / "pids"
    first = LocalExecutor(grace=0.3)
    started = await first.start(
        request(
            tmp_path,
            [PYTHON, str(tree_agent), str(pidfile)],
            log_path=attempt.log_path,
            output_path=attempt.output_path,
            status_path=attempt.status_path,
        )
    )
    attempt.pid, attempt.pid_started = started.pid, started.pid_started
    while not Path(f"{pidfile}.ready").exists():
        await asyncio.sleep(0.02)
    found = await LocalExecutor(grace=0.3).recover(attempt)
    assert isinstance(found, AttemptProcess)
    await found.stop(0.3)
    assert await found.wait() == -signal.SIGTERM
    assert [pid for pid in [started.pid, *read_pids(pidfile)] if pid and alive(pid)] == []
    await first.aclose()


async def test_an_attempt_whose_shim_was_killed_alone_is_lost_and_its_remains_stopped(
    tmp_path: Path,
) -> None:
    """The command outlived its shim while no supervisor ran: the attempt is lost (its
    status is unknown), and what is left of it is stopped before it can run again."""
    import subprocess

    from fleetdeck.executors.local import ATTEMPT_ID_VARIABLE, shim_argv
    from fleetdeck.model import Attempt

    attempt = Attempt(
        attempt_id=7, task="t", stage=Stage.AGENT, number=1, worker="w", host="local",
        run_dir=str(tmp_path),
    )  # fmt: skip
    pidfile = tmp_path / "child.pid"
    script = f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 60"
    shim = subprocess.Popen(
        shim_argv(str(tmp_path), attempt.status_path, 7, ("sh", "-c", script), ()),
        env={**os.environ, ATTEMPT_ID_VARIABLE: "7"},
        start_new_session=True,
    )
    attempt.pid, attempt.pid_started = shim.pid, process_start_time(shim.pid)
    while not pidfile.exists():
        await asyncio.sleep(0.02)
    child = int(pidfile.read_text())
    shim.kill()
    shim.wait()
    assert alive(child)
    assert await LocalExecutor(grace=0.3).recover(attempt) is None
    assert wait_dead([child], timeout=5.0) == []


async def test_an_attempt_inherits_no_descriptor_but_its_three(tmp_path: Path) -> None:
    """A descriptor fleetdeck was started with (a parent's pipe, a make jobserver)
    must not reach attempts: posix_spawn would pass on anything inheritable."""
    reader, writer = os.pipe()
    os.set_inheritable(writer, True)
    try:
        executor = LocalExecutor(grace=0.5)
        script = f"[ -e /proc/self/fd/{writer} ] && echo leaked || echo closed"
        process = await executor.start(request(tmp_path, ["sh", "-c", script]))
        assert await process.wait() == 0
        await executor.aclose()
        assert (tmp_path / "t.log").read_text() == "closed\n"
    finally:
        os.close(reader)
        os.close(writer)
