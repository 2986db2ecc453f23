"""State files are private: 0600 files in 0700 directories, whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON
from fleetdeck.executors.local import make_private
from test_cli_run import write_config

TASKS = """
[[tasks]]
id = "writes"
prompt = "echo out > $FLEETDECK_OUTPUT; echo log"
agent = "sh"
ci = "ci"

[[tasks]]
id = "waits"
prompt = "echo hi > $FLEETDECK_OUTPUT; touch READY; while [ ! -e GO ]; do sleep 0.02; done"
agent = "sh"
depends_on = ["writes"]
"""


def mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_journal_logs_and_outputs_are_private(tmp_path: Path, umask: int) -> None:
    config = write_config(tmp_path, TASKS)
    state = tmp_path / "nested" / "state"
    process = subprocess.Popen(
        [PYTHON, "-m", "fleetdeck", "run", str(config), "--no-tui", "--state-dir", str(state)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.umask(umask),
    )
    try:
        ready = tmp_path / "READY"
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert process.poll() is None, "the run ended before its last task started"
            assert time.monotonic() < deadline, "the last task never started"
            time.sleep(0.02)
        # While the supervisor runs: SQLite's -wal and -shm take the journal's mode.
        live = [state / "journal.sqlite3-wal", state / "journal.sqlite3-shm", state / "lock"]
        assert {path.name: mode(path) for path in live} == {path.name: "0o600" for path in live}
    finally:
        (tmp_path / "GO").touch()
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    directories = [state, state / "runs", state / "runs" / "1"]
    assert {str(d): mode(d) for d in directories} == {str(d): "0o700" for d in directories}
    files = [path for path in state.rglob("*") if path.is_file()]
    names = {path.name for path in files}
    assert {
        "journal.sqlite3",
        "writes.1.agent.log",
        "writes.1.agent.out",
        "writes.1.ci.log",
    } <= names
    assert "waits.1.agent.out" in names
    assert {str(f): mode(f) for f in files} == {str(f): "0o600" for f in files}


def test_make_private_never_follows_a_symlink_nor_blocks_on_a_fifo(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("not ours")
    target.chmod(0o644)
    link = tmp_path / "out"
    link.symlink_to(target)
    make_private(str(link))
    assert mode(target) == "0o644"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o644)
    make_private(str(fifo))  # returns at once: no writer needed
    assert stat.S_ISFIFO(fifo.stat().st_mode) and mode(fifo) == "0o644"
    make_private(str(tmp_path / "missing"))
    plain = tmp_path / "plain"
    plain.write_text("x")
    plain.chmod(0o666)
    make_private(str(plain))
    assert mode(plain) == "0o600"
