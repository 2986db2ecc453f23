"""A state directory that cannot be written: read-only from the start, or full mid-run.

Permission bits do not stop root, and the suite runs as root in CI, so these tests
mount what they need: a read-only tmpfs, and a tiny tmpfs that fills up. When
mounting is impossible (not root, no CAP_SYS_ADMIN) they are skipped with the
reason, except under CI=true, where they must run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import alive, wait_dead
from test_cli_run import fleetdeck

Mount = Callable[..., Path]


def _mount(target: Path, options: str) -> str | None:
    """Mount a tmpfs at `target`; the error when that is impossible."""
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else done.stderr.strip() or f"exit {done.returncode}"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """`tmpfs(name, options)` mounts a tmpfs at tmp_path/name, unmounted at the end."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        target = tmp_path / name
        target.mkdir(exist_ok=True)
        error = _mount(target, options)
        if error is not None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI must run the state-dir fault tests, but mount failed: {error}")
            pytest.skip(f"cannot mount a tmpfs here (needs root): {error}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def remount_read_only(target: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True, capture_output=True)


def fleet_file(tmp_path: Path, state_dir: Path, tasks: str, *, slots: int = 2) -> Path:
    config = tmp_path / "fleet.toml"
    config.write_text(
        f"""
[fleet]
name = "faults"
state_dir = "{state_dir}"
grace_period = 0.3

[agents.sh]
command = ["sh", "-c", "{{prompt}}"]
slots = {slots}
{tasks}
"""
    )
    return config


ONE_TASK = '[[tasks]]\nid = "a"\nprompt = "true"\nagent = "sh"\n'


def test_a_read_only_state_dir_is_one_clear_line_and_exit_2(tmp_path: Path, tmpfs: Mount) -> None:
    read_only = tmpfs("ro", "ro,size=1m")
    for state_dir in (read_only, read_only / "sub"):
        done = fleetdeck("run", str(fleet_file(tmp_path, state_dir, ONE_TASK)), "--no-tui")
        assert done.returncode == 2
        assert done.stdout == ""
        assert done.stderr == (
            f"fleetdeck: cannot open the journal in {state_dir}: Read-only file system\n"
        )


def test_report_reads_a_journal_on_a_read_only_disk(tmp_path: Path, tmpfs: Mount) -> None:
    state = tmpfs("state", "size=4m")
    assert fleetdeck("run", str(fleet_file(tmp_path, state, ONE_TASK)), "--no-tui").returncode == 0
    remount_read_only(state)
    report = fleetdeck("report", str(state), "--json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert (data["status"], data["tasks"][0]["state"]) == ("finished", "succeeded")


def test_a_disk_that_fills_mid_run_stops_cleanly_and_keeps_the_journal(
    tmp_path: Path, tmpfs: Mount
) -> None:
    state = tmpfs("small", "size=256k")
    pidfile = tmp_path / "sleeper.pid"
    # One attempt sleeps through it all (it must be stopped, not orphaned); the
    # others each print a few pages of log until the disk is full.
    tasks = [
        f'[[tasks]]\nid = "sleeper"\nprompt = "echo $$ > {pidfile}; exec sleep 60"\nagent = "sh"\n'
    ]
    tasks += [
        f'[[tasks]]\nid = "w{i}"\nprompt = "head -c 9000 /dev/zero | tr \\"\\\\\\\\0\\" x"\n'
        'agent = "sh"\n'
        for i in range(300)
    ]
    config = fleet_file(tmp_path, state, "".join(tasks), slots=3)
    done = fleetdeck("run", str(config), "--no-tui")
    assert done.returncode == 1, done.stderr
    assert pidfile.exists(), "the sleeper never started"
    sleeper = int(pidfile.read_text())
    if alive(sleeper):
        wait_dead([sleeper], timeout=5)
    assert not alive(sleeper), "the run left its attempt behind"
    # One line: what failed, where, and why.
    assert done.stderr == (
        f"fleetdeck: cannot write the journal in {state}: database or disk is full\n"
    ), done.stderr
    assert "Traceback" not in done.stdout

    db = sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    journaled = [
        (kind, task) for kind, task in db.execute("SELECT event, task FROM events ORDER BY seq")
    ]
    db.close()
    # Every event printed was committed first, in that order.
    printed = [
        (line.split()[2], None if line.split()[1] == "-" else line.split()[1])
        for line in done.stdout.splitlines()
    ]
    assert printed and journaled[: len(printed)] == printed
    report = fleetdeck("report", str(state), "--json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["status"] == "interrupted"
    assert "ended without finishing the run" in data["reason"]
    assert data["unfinished"], "the disk filled before the end: some tasks never ran"
    succeeded = {task for kind, task in journaled if kind == "task_succeeded"}
    assert {t["task"] for t in data["tasks"] if t["state"] == "succeeded"} == succeeded


def test_a_file_in_the_way_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """Found while testing: a file named `runs` in the state dir raised out of run."""
    in_the_way = tmp_path / "file"
    in_the_way.write_text("")
    done = fleetdeck("run", str(fleet_file(tmp_path, in_the_way, ONE_TASK)), "--no-tui")
    assert (done.returncode, done.stderr) == (
        2,
        f"fleetdeck: cannot open the journal in {in_the_way}: not a directory\n",
    )
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "runs").write_text("")
    done = fleetdeck("run", str(fleet_file(tmp_path, state, ONE_TASK)), "--no-tui")
    assert (done.returncode, done.stderr) == (
        1,
        f"fleetdeck: cannot create {state / 'runs'}: not a directory\n",
    )
