"""`fleetdeck run` end to end, as a user runs it: a real process, real signals."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import PYTHON, alive, read_pids, wait_for_file
from fleetdeck.cli import main, starting_up
from fleetdeck.headless import HeadlessView, format_details
from fleetdeck.model import Event, EventKind

LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  \S+\s+[a-z_]+(  .*)?$")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def write_config(tmp_path: Path, body: str, *, fleet: str = "") -> Path:
    config = tmp_path / "fleet.toml"
    config.write_text(
        f"""
[fleet]
name = "cli-test"
state_dir = "state"
grace_period = 0.3
retry_backoff = 0.05
{fleet}

[agents.sh]
command = ["sh", "-c", "{{prompt}}"]
slots = 2

[runners.ci]
command = ["sh", "-c", "sleep 0.05"]
slots = 1
{body}
"""
    )
    return config


def fleetdeck(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "fleetdeck", *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,  # type: ignore[call-overload]
    )


TWO_TASKS = """
[[tasks]]
id = "build"
prompt = "echo building"
agent = "sh"
ci = "ci"

[[tasks]]
id = "docs"
prompt = "echo docs"
agent = "sh"
depends_on = ["build"]
"""


def test_headless_prints_one_line_per_event_then_the_table_and_report(tmp_path: Path) -> None:
    config = write_config(tmp_path, TWO_TASKS)
    # stdout is a pipe, not a terminal: headless is chosen without --no-tui.
    done = fleetdeck("run", str(config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    blank = lines.index("")
    events = lines[:blank]
    assert all(LINE.match(line) for line in events), events
    assert [line.split()[2] for line in events][:2] == ["run_started", "task_ready"]
    assert events[-1].split()[2] == "run_finished"
    table = lines[blank + 1 :]
    assert table[0].split() == ["task", "state", "attempts", "duration", "ci", "wait"]
    assert table[1].split()[:3] == ["build", "succeeded", "1"]
    assert table[2].split()[:3] == ["docs", "succeeded", "1"]
    report = "\n".join(table)
    for name in ("makespan", "lower bound", "completion rate", "CI queue wait", "throughput"):
        assert name in report
    assert "completion rate   100%" in report


def test_json_lines_carry_the_event_vocabulary(tmp_path: Path) -> None:
    config = write_config(tmp_path, TWO_TASKS)
    done = fleetdeck("run", str(config), "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    vocabulary = {str(kind) for kind in EventKind}
    assert all(e["event"] in vocabulary and ISO_MS.match(e["ts"]) for e in events)
    finished = [e for e in events if e["event"] == "attempt_finished"]
    assert {(e["task"], e["stage"], e["outcome"], e["exit_code"]) for e in finished} == {
        ("build", "agent", "ok", 0),
        ("build", "ci", "ok", 0),
        ("docs", "agent", "ok", 0),
    }
    assert all(isinstance(e["duration"], float) for e in finished)
    assert [e["event"] for e in events if e.get("task") == "build"][:4] == [
        "task_ready",
        "attempt_started",
        "attempt_finished",
        "ci_queued",
    ]
    last = events[-1]
    assert last["event"] == "run_finished" and last["exit_code"] == 0
    assert last["report"]["completion_rate"] == 1.0


def test_policy_flag_overrides_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, TWO_TASKS)
    done = fleetdeck("run", str(config), "--json", "--policy", "sequential")
    first = json.loads(done.stdout.splitlines()[0])
    assert first["event"] == "run_started" and first["policy"] == "sequential"


def test_a_failed_task_exits_1_and_a_bad_config_exits_2(tmp_path: Path) -> None:
    failing = write_config(tmp_path, '[[tasks]]\nid = "bad"\nprompt = "exit 4"\nagent = "sh"\n')
    done = fleetdeck("run", str(failing), "--no-tui")
    assert done.returncode == 1
    assert "task_failed" in done.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text('[fleet]\nname = "x"\npolicy = "wav"\n')
    done = fleetdeck("run", str(broken))
    assert done.returncode == 2
    assert (
        "fleet.policy: must be one of 'sequential', 'wave', 'pipelined', 'adaptive', got 'wav'"
        in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_state_dir_flag_moves_the_journal(tmp_path: Path) -> None:
    config = write_config(tmp_path, TWO_TASKS)
    elsewhere = tmp_path / "elsewhere"
    assert fleetdeck("run", str(config), "--state-dir", str(elsewhere)).returncode == 0
    assert (elsewhere / "journal.sqlite3").is_file()
    assert not (tmp_path / "state").exists()
    assert oct(elsewhere.stat().st_mode & 0o777) == oct(0o700)
    assert oct((elsewhere / "journal.sqlite3").stat().st_mode & 0o777) == oct(0o600)


LONG_TREE = """
[agents.py]
command = ["{python}", "TREE", "{prompt}"]
slots = 2

[[tasks]]
id = "tree"
prompt = "PIDS"
agent = "py"

[[tasks]]
id = "later"
prompt = "true"
agent = "sh"
depends_on = ["tree"]
"""


def _start_tree_fleet(
    tmp_path: Path, tree_agent: Path, grace: float
) -> tuple[subprocess.Popen[str], Path]:
    pidfile = tmp_path / "pids"
    body = LONG_TREE.replace("TREE", str(tree_agent)).replace("PIDS", str(pidfile))
    config = write_config(tmp_path, body)
    config.write_text(config.read_text().replace("grace_period = 0.3", f"grace_period = {grace}"))
    process = subprocess.Popen(
        [PYTHON, "-m", "fleetdeck", "run", str(config), "--no-tui"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_file(Path(f"{pidfile}.ready"))
    return process, pidfile


def test_ctrl_c_stops_every_attempt_and_exits_130(tmp_path: Path, tree_agent: Path) -> None:
    process, pidfile = _start_tree_fleet(tmp_path, tree_agent, grace=0.3)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "interrupted: stopping 1 attempt(s)" in err
    assert [pid for pid in read_pids(pidfile) if alive(pid)] == []
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    assert db.execute("SELECT status, exit_code FROM runs").fetchone() == ("interrupted", 130)
    last = db.execute("SELECT event FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    assert last == ("run_finished",)
    assert "Traceback" not in err


def test_a_second_ctrl_c_kills_at_once(tmp_path: Path, tree_agent: Path) -> None:
    """With a 30 s grace period, the second Ctrl-C must not wait for it."""
    process, pidfile = _start_tree_fleet(tmp_path, tree_agent, grace=30)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=15)
    assert process.returncode == 130
    assert [pid for pid in read_pids(pidfile) if alive(pid)] == []


def test_sigterm_and_sighup_stop_cleanly_too(tmp_path: Path, tree_agent: Path) -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        run_dir = tmp_path / signum.name
        run_dir.mkdir()
        process, pidfile = _start_tree_fleet(run_dir, tree_agent, grace=0.3)
        process.send_signal(signum)
        process.communicate(timeout=30)
        assert process.returncode == 130
        assert [pid for pid in read_pids(pidfile) if alive(pid)] == []


def test_a_second_supervisor_on_the_same_state_dir_is_refused(
    tmp_path: Path, tree_agent: Path
) -> None:
    process, _pidfile = _start_tree_fleet(tmp_path, tree_agent, grace=0.3)
    try:
        second = fleetdeck("run", str(tmp_path / "fleet.toml"), "--no-tui")
        assert second.returncode == 2
        assert "is in use by another fleetdeck (pid " in second.stderr
        assert second.stderr.count("\n") == 1, second.stderr  # one clear line
        assert "Traceback" not in second.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_a_daemon_left_by_a_finished_attempt_is_stopped(tmp_path: Path) -> None:
    """Double fork + setsid escapes group and parentage; the CLI, a subreaper, adopts it."""
    pidfile = tmp_path / "daemon.pid"
    script = tmp_path / "daemon.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"        open({str(pidfile)!r}, 'w').write(f'{{os.getpid()}}\\n')\n"
        "        while True: time.sleep(1)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        f"while not os.path.exists({str(pidfile)!r}): time.sleep(0.01)\n"
    )
    body = f"""
[agents.py]
command = ["{{python}}", "{script}"]

[[tasks]]
id = "leaves-a-daemon"
agent = "py"
"""
    done = fleetdeck("run", str(write_config(tmp_path, body)), "--no-tui")
    assert done.returncode == 0, done.stderr
    assert not alive(int(pidfile.read_text()))


def _loaded_after(*args: str) -> tuple[int, set[str]]:
    """`fleetdeck ARGS` in a fresh interpreter: its exit code and every module loaded."""
    code = (
        "import json, sys\n"
        "from fleetdeck.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(json.dumps([code, sorted(sys.modules)]), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    exit_code, modules = json.loads(done.stderr.splitlines()[-1])
    return exit_code, set(modules)


def _packages(modules: set[str], names: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_start_up_loads_only_what_the_command_needs(tmp_path: Path) -> None:
    """Every run pays its start-up: a headless run of a fleet without SSH hosts loads
    neither Textual nor asyncssh, nor what only a view (fleetdeck.snapshot) or a
    tree kill (psutil) needs, and `validate` none of the machinery of a run."""
    config = write_config(tmp_path, TWO_TASKS)
    code, modules = _loaded_after("run", str(config), "--no-tui")
    assert code == 0
    assert "fleetdeck.engine" in modules  # it did run
    not_needed = {
        "textual",
        "fleetdeck.tui",
        "asyncssh",
        "fleetdeck.executors.ssh",
        "fleetdeck.snapshot",
        "psutil",
    }
    assert _packages(modules, not_needed) == []

    code, modules = _loaded_after("validate", str(config))
    assert code == 0
    run_only = {"asyncio", "sqlite3", "psutil", "fleetdeck.engine", "fleetdeck.executors"}
    assert _packages(modules, run_only) == []


def test_start_up_pauses_the_cycle_collector_freezes_what_it_made_and_restores_it(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, TWO_TASKS)
    try:
        with starting_up():
            assert not gc.isenabled()
            made = {"a cycle": []}
            made["a cycle"].append(made)
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        assert all(tracked is not made for tracked in gc.get_objects())  # frozen

        gc.disable()  # a caller that runs without the collector keeps it off
        assert main(["validate", str(config)]) == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


class _CountingStream(io.StringIO):
    """A stream that counts its write() calls, as an unbuffered stdout would make
    one system call each (PYTHONUNBUFFERED)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_headless_writes_a_batch_of_events_at_once_whatever_the_buffering() -> None:
    out = _CountingStream()
    view = HeadlessView(out)

    async def a_commit_then_another() -> None:
        # Three events published by one commit, then two by the next turn's.
        for task in ("a", "b", "c"):
            view(Event(0.0, EventKind.TASK_READY, task, {"wave": 0}))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert out.writes == 1
        for task in ("d", "e"):
            view(Event(0.0, EventKind.TASK_SUCCEEDED, task, {}))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(a_commit_then_another())
    assert out.writes == 2
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["a", "b", "c", "d", "e"]
    assert all(LINE.match(line) for line in lines)


def test_event_details_show_the_usual_keys_first_and_quote_what_needs_it() -> None:
    details = format_details(
        {
            "wave": 2,
            "reason": "failed after 2 attempts",
            "stage": "agent",
            "error": "",
            "pid": None,
            "duration": 75.25,
            "attempts": 2,
            "report": {"makespan": 1.0},
        }
    )
    # _DETAIL_ORDER's keys in its order, then the others alphabetically; None
    # and hidden keys left out; durations as durations; empty and spaced values
    # quoted so that each still reads as one value.
    assert details == (
        'stage=agent duration=1m15s reason="failed after 2 attempts" error="" attempts=2 wave=2'
    )
