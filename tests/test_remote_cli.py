"""The fleet outlives the terminal: `fleetdeck start`, the script commands through
the control socket, and a detached fleet surviving its terminal (real supervisor
processes, real agents)."""

from __future__ import annotations

import json
import os
import pty
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from remote_support import Supervisors, alive, cli, supervisors, wait_until, write_fleet

__all__ = ["supervisors"]


def _status(state: Path) -> dict[str, object]:
    result = cli("status", str(state), "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def _report(state: Path) -> dict[str, object]:
    result = cli("report", str(state), "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_start_steer_stop_and_start_again(tmp_path: Path, supervisors: Supervisors) -> None:
    gate = tmp_path / "gate"
    config = write_fleet(
        tmp_path,
        [
            {"id": "one", "script": f"while [ ! -e {gate} ]; do sleep 0.05; done; echo one done"},
            {"id": "two", "script": "echo two failed; exit 3"},
            {"id": "three", "script": "echo three", "depends_on": ["one"]},
            {"id": "talk", "script": "for i in 1 2 3; do echo line $i; sleep 0.3; done"},
        ],
        slots=3,
    )
    state = tmp_path / "state"
    pid = supervisors.start(config)
    assert alive(pid)
    # The socket is the owner's alone: 0600 in the 0700 state directory.
    assert stat.S_IMODE((state / "control.sock").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700

    # ps lists it, with its progress.
    listed = cli("ps")
    assert str(state) in listed.stdout and str(pid) in listed.stdout, listed.stdout

    wait_until(lambda: "two" in str(_status(state)["attention"]), what="two failed")
    status = _status(state)
    assert status["pid"] == pid and status["total"] == 4 and status["exit_code"] is None
    # logs -f follows the log to its attempt's end.
    followed = cli("logs", str(state), "talk", "-f")
    assert followed.returncode == 0, followed.stderr
    assert [line for line in followed.stdout.splitlines() if line] == [
        "line 1",
        "line 2",
        "line 3",
    ]
    # attach needs a terminal, and says so.
    blind = cli("attach", str(state))
    assert blind.returncode == 2
    assert blind.stderr == "fleetdeck: attach: needs a terminal (try `fleetdeck status`)\n"

    # Commands as the keys send them.
    assert cli("pause", str(state)).returncode == 0
    assert _status(state)["paused"] is True
    assert cli("resume", str(state)).returncode == 0
    assert _status(state)["paused"] is False
    assert cli("policy", str(state), "sequential").returncode == 0
    assert _status(state)["policy"] == "sequential"
    assert cli("policy", str(state), "wave").returncode == 0  # two's retry may start
    logs = cli("logs", str(state), "two")
    assert logs.returncode == 0 and "two failed" in logs.stdout

    # A refused command: one line, exit 2, nothing else changes.
    refused = cli("retry", str(state), "nope")
    assert refused.returncode == 2
    assert refused.stderr.strip() == "fleetdeck: retry: unknown task 'nope'"
    assert cli("retry", str(state), "two").returncode == 0
    wait_until(lambda: _report_attempts(state, "two") == 2, what="two retried")

    # Starting it twice is refused, naming the running one.
    again = cli("start", str(config))
    assert again.returncode == 2 and "already running" in again.stderr

    # stop: as Ctrl-C, the run interrupted and journaled; the supervisor exits.
    stopped = cli("stop", str(state))
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: not alive(pid), what="the supervisor exits")
    assert not (state / "control.sock").exists()
    assert _report(state)["status"] == "interrupted"
    assert cli("ps").stdout.strip() == "no fleet is running"
    assert cli("status", str(state)).returncode == 2

    # start again resumes the same run to its end.
    gate.touch()
    pid = supervisors.start(config)
    wait_until(lambda: not alive(pid), what="the resumed run ends")
    report = _report(state)
    assert report["run_id"] == 1 and report["status"] == "finished"
    states = {task["task"]: task["state"] for task in report["tasks"]}  # type: ignore[attr-defined]
    assert states == {
        "one": "succeeded",
        "two": "failed",
        "three": "succeeded",
        "talk": "succeeded",
    }
    assert "run_finished" in (state / "supervisor.log").read_text()


def _report_attempts(state: Path, task: str) -> int:
    for row in _report(state)["tasks"]:  # type: ignore[attr-defined]
        if row["task"] == task:
            return int(row["attempts"])
    return 0


def test_start_refuses_a_bad_config_with_the_config_message(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text('[fleet]\nname = "x"\n[[tasks]]\nid = "a"\nagent = "ghost"\n')
    result = cli("start", str(config))
    validate = cli("validate", str(config))
    assert result.returncode == 2 and validate.returncode == 2
    assert result.stderr == validate.stderr
    assert "Traceback" not in result.stderr


def test_start_says_why_when_the_run_cannot_start(tmp_path: Path, supervisors: Supervisors) -> None:
    config = write_fleet(tmp_path, [{"id": "a"}])
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "journal.sqlite3").write_text("not a database" * 100)
    result = cli("start", str(config))
    assert result.returncode == 2
    assert "did not start" in result.stderr and "Traceback" not in result.stderr


def test_commands_without_a_fleet_say_so(tmp_path: Path, supervisors: Supervisors) -> None:
    result = cli("status", str(tmp_path))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"fleetdeck: status: {tmp_path}: no fleet is running there (no supervisor)"
    )


def test_a_detached_fleet_survives_its_terminal(tmp_path: Path, supervisors: Supervisors) -> None:
    """start from a shell on a terminal, then the terminal goes away (the shell
    and everything in its session get SIGHUP and die): the fleet finishes."""
    config = write_fleet(
        tmp_path,
        [
            {"id": "a", "script": "sleep 1.5; echo a"},
            {"id": "b", "script": "sleep 1.5; echo b"},
            {"id": "c", "script": "echo c", "depends_on": ["a", "b"]},
        ],
    )
    state = tmp_path / "state"
    command = f"{sys.executable} -m fleetdeck start {config}; echo STARTED; sleep 60"
    shell_pid, master = pty.fork()
    if shell_pid == 0:  # the child: a shell on the new terminal
        os.execvp("sh", ["sh", "-c", command])
    out = b""
    deadline = time.monotonic() + 30
    while b"STARTED" not in out and time.monotonic() < deadline:
        try:
            out += os.read(master, 4096)
        except OSError:
            break
    assert b"started in the background" in out, out
    pid = int(out.split(b"supervisor pid ")[1].split(b")")[0])
    supervisors.note(pid)
    # The terminal goes away: hang up its session, kill the shell, close the master.
    os.killpg(shell_pid, signal.SIGHUP)
    os.kill(shell_pid, signal.SIGKILL)
    os.close(master)
    os.waitpid(shell_pid, 0)
    assert alive(pid), "the supervisor went with its terminal"
    wait_until(lambda: not alive(pid), timeout=30, what="the fleet ends")
    report = _report(state)
    assert report["status"] == "finished"
    assert {task["state"] for task in report["tasks"]} == {"succeeded"}  # type: ignore[attr-defined]


def test_kill_9_of_an_attached_client_leaves_the_supervisor_running(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    gate = tmp_path / "gate"
    config = write_fleet(
        tmp_path, [{"id": "a", "script": f"while [ ! -e {gate} ]; do sleep 0.05; done"}]
    )
    state = tmp_path / "state"
    pid = supervisors.start(config)
    attached = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from fleetdeck.remote.socket_client import SocketClient\n"
            f"client = SocketClient.connect({str(state)!r}, stream=True)\n"
            "print(client.snapshot().total, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert attached.stdout is not None
        assert attached.stdout.readline().strip() == "1"
        attached.kill()
        attached.wait()
        # The supervisor goes on, answers, and ends the run normally.
        assert _status(state)["in_flight"] == 1
        gate.touch()
        wait_until(lambda: not alive(pid), what="the run ends")
        assert _report(state)["status"] == "finished"
    finally:
        if attached.poll() is None:
            attached.kill()
            attached.wait()
        if attached.stdout is not None:
            attached.stdout.close()


def _read_until(fd: int, text: bytes, seconds: float = 20.0) -> bytes:
    import select

    seen = b""
    deadline = time.monotonic() + seconds
    while text not in seen and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def _run_on_a_terminal(config: Path) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: `fleetdeck run` on a terminal, as in a shell
        os.environ["TERM"] = "xterm-256color"
        os.execv(sys.executable, [sys.executable, "-m", "fleetdeck", "run", str(config)])
    return pid, fd


def test_run_with_on_hangup_detach_offers_d_and_survives_the_terminal(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    gate = tmp_path / "gate"
    config = write_fleet(
        tmp_path,
        [{"id": "a", "script": f"while [ ! -e {gate} ]; do sleep 0.05; done"}, {"id": "b"}],
    )
    config.write_text(config.read_text().replace("[fleet]\n", '[fleet]\non_hangup = "detach"\n'))
    state = tmp_path / "state"
    # d detaches: the TUI leaves, saying how to come back; the fleet goes on.
    tui, fd = _run_on_a_terminal(config)
    try:
        assert b"fleetdeck" in _read_until(fd, b"fleetdeck")  # the header is drawn
        wait_until(lambda: (state / "control.sock").exists(), what="the fleet starts")
        listed = json.loads(cli("ps", "--json").stdout)
        supervisors.note(int(listed["pid"]))
        time.sleep(1.0)  # the screen is up
        os.write(fd, b"d")
        out = _read_until(fd, b"detached; the fleet goes on")
        assert b"detached; the fleet goes on" in out, out[-500:]
        _, status = os.waitpid(tui, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
    assert alive(int(listed["pid"]))
    # run again on another terminal: it attaches to the fleet running; then that
    # terminal goes away under it.
    tui, fd = _run_on_a_terminal(config)
    time.sleep(1.5)
    os.kill(tui, signal.SIGHUP)
    os.close(fd)
    os.waitpid(tui, 0)
    assert alive(int(listed["pid"])), "losing the terminal stopped the fleet"
    assert _status(state)["in_flight"] == 1
    gate.touch()
    wait_until(lambda: not alive(int(listed["pid"])), what="the fleet ends")
    assert _report(state)["status"] == "finished"


def test_a_background_fleet_notifies_a_command_and_a_url_once_per_burst(
    tmp_path: Path, supervisors: Supervisors
) -> None:
    import http.server
    import threading

    posts: list[dict[str, object]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        told = tmp_path / "told"
        config = write_fleet(
            tmp_path,
            [{"id": f"bad{i}", "script": "exit 1"} for i in range(4)] + [{"id": "ok"}],
            slots=5,
        )
        config.write_text(
            config.read_text().replace(
                "[fleet]\n",
                "[fleet]\n"
                f'notify = ["sh", "-c", "echo \\"$0\\" >> {told}", "{{message}}"]\n'
                f'notify_url = "http://127.0.0.1:{server.server_port}/hook"\n'
                # Longer than the run, however loaded the machine: the burst
                # is gathered until the end flushes it, whatever the timing.
                "notify_interval = 120.0\n",
            )
        )
        pid = supervisors.start(config)
        wait_until(lambda: not alive(pid), what="the run ends")
        lines = told.read_text().splitlines()
        # A burst of four failures and the end: the first failures at once (with
        # those told in the same turn of the loop), the rest gathered with the
        # end into one message (or all in one, when they ended together).
        assert 1 <= len(lines) <= 2, lines
        assert all(line.startswith("fleetdeck bg: ") for line in lines), lines
        assert lines[-1].endswith("run finished (exit 1)"), lines
        named = [name for line in lines for name in line.split(": ")[-1].split(", ")]
        assert sorted(n.split(";")[0] for n in named if n.startswith("bad")) == [
            f"bad{i}" for i in range(4)
        ], lines
        assert [post["text"] for post in posts] == lines
    finally:
        server.shutdown()
        server.server_close()
