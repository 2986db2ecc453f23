"""The TUI on a real terminal (a pseudo-terminal) that goes away under it.

Pilot tests run Textual's headless driver; this runs `fleetdeck run` as a user
does, on a pty, and then closes the terminal as a dropped SSH connection or a
killed tmux does: the pty's other end is closed and the session gets SIGHUP.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from pathlib import Path

import psutil

from conftest import PYTHON

# Many attempts that print: the screen is busy when the terminal goes away.
FLEET = """
[fleet]
name = "hangup"
state_dir = "state"

[agents.talker]
command = ["sh", "-c", "while :; do echo working on $FLEETDECK_TASK; sleep 0.01; done"]
slots = 30

{tasks}
"""


def read_for(fd: int, seconds: float) -> bytes:
    """What the app writes to the terminal for `seconds` (drained, so it never blocks)."""
    seen = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def test_the_terminal_going_away_stops_the_run_and_the_app_exits(tmp_path: Path) -> None:
    tasks = "\n".join(f'[[tasks]]\nid = "t{i:03d}"\nagent = "talker"\n' for i in range(60))
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.format(tasks=tasks))
    pid, fd = pty.fork()
    if pid == 0:  # the child: fleetdeck on the terminal, as in a shell
        os.chdir(tmp_path)
        os.environ["TERM"] = "xterm-256color"
        os.execv(PYTHON, [PYTHON, "-m", "fleetdeck", "run", str(config)])
    supervisor = psutil.Process(pid)
    try:
        screen = read_for(fd, 6.0)
        assert b"In flight" in screen, "the TUI should be on the terminal"
        attempts = [child.pid for child in supervisor.children(recursive=True)]
        assert len(attempts) >= 30
        # The terminal goes away: its other end closes, the session hears SIGHUP.
        os.close(fd)
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("fleetdeck did not exit after its terminal went away")
        assert os.waitstatus_to_exitcode(status) == 130
        assert [p for p in attempts if psutil.pid_exists(p) and not _zombie(p)] == []
    finally:
        if supervisor.is_running():
            for process in [*supervisor.children(recursive=True), supervisor]:
                process.kill()
            os.waitpid(pid, 0)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
