"""Attaching over SSH (`ssh://[user@]host[:port]/state_dir`): the real TUI and
the script commands on this machine, talking to a real supervisor through the
test sshd (tests/sshd.py), its control socket forwarded over the connection.

Who logs in: the supervisor runs as this test's user (root: the SSH tests need
it, and the venv's Python lives under /root, which the unprivileged test user
cannot run), and its peer-credential check sees the uid of the SSH login's
session, so these tests log in as root with the lab's key (the test sshd allows
root by key only, no password). A login as the unprivileged user, to a fleet
whose modes were opened wide, is refused by that same check.

The user's SSH setup is a home of the test's own: ~/.ssh/id_ed25519 (the lab's
client key) and ~/.ssh/known_hosts, as `ssh` reads them; no agent.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import must_have
from fleetdeck.model import TaskState
from fleetdeck.remote.socket_client import AttachError, ConnectionLost, RemoteRun, SocketClient
from fleetdeck.remote.ssh_transport import HOLD_COMMAND, SshTarget, parse_target
from fleetdeck.tui.app import FleetApp
from fleetdeck.tui.header import FleetHeader
from fleetdeck.tui.queue import QueueTable
from remote_support import Supervisors, alive, cli, supervisors, wait_until, write_fleet
from sshd import (
    TEST_USER,
    SshLab,
    SshServer,
    ensure_test_user,
    free_port,
    missing_tools,
    processes_matching,
)
from test_tui_terminal import read_for
from tui_support import until

__all__ = ["supervisors"]

HOLD_MARK = HOLD_COMMAND.split()[1]  # in the terminal session's command line

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab() -> Iterator[SshLab]:
    must_have(missing_tools())
    ensure_test_user()
    made = SshLab.create()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def host(lab: SshLab) -> SshServer:
    return lab.start_server("fleetbox")


@pytest.fixture
def home(tmp_path: Path, lab: SshLab, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$HOME with the user's SSH setup: the lab's key, and known_hosts listing its servers."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True, mode=0o700)
    shutil.copy(lab.client_key, path / ".ssh" / "id_ed25519")
    (path / ".ssh" / "id_ed25519").chmod(0o600)
    shutil.copy(lab.known_hosts, path / ".ssh" / "known_hosts")
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return path


def url(server: SshServer, state: Path, user: str = "root") -> str:
    return f"ssh://{user}@127.0.0.1:{server.port}{state}"


def _state(client: SocketClient, task: str) -> TaskState:
    return next(view.state for view in client.snapshot().tasks if view.id == task)


def one_line_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The one line a refused command printed (exit 2, nothing on stdout)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"fleetdeck: {command}: ")
    return lines[0]


def ssh_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "fleetdeck-ssh"]


def test_ssh_urls_are_read_as_ssh_reads_them() -> None:
    assert parse_target("ssh://box/srv/fleet/state") == SshTarget("box", "/srv/fleet/state")
    assert parse_target("ssh://ann@box:2222/s") == SshTarget("box", "/s", user="ann", port=2222)
    assert parse_target("ssh://[::1]:22/a%20b/") == SshTarget("::1", "/a b/", port=22)
    assert str(parse_target("ssh://ann@[::1]:22/s")) == "ssh://ann@[::1]:22/s"
    for bad, why in (
        ("ssh://box", "no state directory after the host"),
        ("ssh://box/", "no state directory after the host"),
        ("ssh://@box/s", "empty user name"),
        ("ssh://box:0/s", "port '0' is not a number from 1 to 65535"),
        ("ssh://box:ssh/s", "port 'ssh' is not a number"),
        ("ssh://[::1/s", "unclosed '['"),
        ("ssh:///s", "no host"),
    ):
        with pytest.raises(AttachError, match=re.escape(why)):
            parse_target(bad)


async def test_the_tui_attached_over_ssh_shows_the_fleet_and_its_keys_work(
    tmp_path: Path, supervisors: Supervisors, host: SshServer, home: Path
) -> None:
    gate = tmp_path / "gate"
    config = write_fleet(
        tmp_path,
        [
            {"id": "flaky", "script": f"echo attempt; test -e {tmp_path}/fixed || exit 1"},
            {
                "id": "long",
                "script": f"echo long is working; while [ ! -e {gate} ]; do sleep 0.05; done",
            },
            {"id": "after", "script": "true", "depends_on": ["long"]},
        ],
        slots=3,
    )
    state = tmp_path / "state"
    pid = supervisors.start(config)
    client = SocketClient.connect(url(host, state))
    local = SocketClient.connect(state)  # a screen on the fleet's own machine, at the same time
    app = FleetApp(client, RemoteRun(client), attached=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: _state(client, "flaky") is TaskState.FAILED)
        await pilot.pause(0.3)
        # The screen shows the remote fleet: its name, its tasks.
        assert "bg" in str(app.query_one(FleetHeader).render())
        assert {task.id for task in client.snapshot().tasks} == {"flaky", "long", "after"}
        table = app.query_one(QueueTable)
        shown = [key for key in table.row_keys() if not key.startswith("wave:")]
        assert sorted(shown) == ["after", "flaky", "long"]
        assert "failed" in str(table.get_cell("flaky", "state")).lower()
        assert app.selected_task() is not None
        # The terminal session that keeps sshd's replies quick runs there.
        assert len(processes_matching(HOLD_MARK)) == 1

        # p: pause, through the forwarded socket; the supervisor (seen by the
        # local screen) holds launches back.
        await pilot.press("p")
        assert client.snapshot().paused
        await until(lambda: local.snapshot().paused)
        await pilot.press("p")
        assert not client.snapshot().paused
        await until(lambda: not local.snapshot().paused)

        # r: the failed task runs again, and succeeds now.
        (tmp_path / "fixed").touch()
        while app.selected_task() != "flaky":
            await pilot.press("j")
        await pilot.press("r")
        await until(lambda: _state(client, "flaky") is TaskState.SUCCEEDED)
        await until(lambda: _state(local, "flaky") is TaskState.SUCCEEDED)

        # q detaches: the fleet goes on.
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert client.closed
    assert alive(pid)
    assert _state(local, "long") is TaskState.RUNNING
    assert local.gone is None
    # The SSH connection went with the screen: sshd serves nothing but its
    # listener, and the transport's thread has ended.
    wait_until(lambda: len(host.sshd_processes()) == 1, what="the SSH connection closed")
    assert ssh_threads() == []
    wait_until(
        lambda: processes_matching(HOLD_MARK) == [],
        what="the terminal session's loop ended with it",
    )
    local.close()


def test_the_script_commands_steer_a_fleet_over_ssh(
    tmp_path: Path, supervisors: Supervisors, host: SshServer, home: Path
) -> None:
    config = write_fleet(
        tmp_path,
        [
            {"id": "flaky", "script": f"echo try; test -e {tmp_path}/fixed || exit 1"},
            {"id": "long", "script": "echo long is working; sleep 60"},
        ],
    )
    state = tmp_path / "state"
    pid = supervisors.start(config)
    where = url(host, state)
    local = SocketClient.connect(state, stream=False)
    wait_until(lambda: _state(local, "flaky") is TaskState.FAILED, what="flaky failed")

    status = cli("status", where, "--json")
    assert status.returncode == 0, status.stderr
    assert '"fleet": "bg"' in status.stdout and '"paused": false' in status.stdout

    assert cli("pause", where).stdout.startswith("paused")
    assert local.snapshot().paused
    assert cli("resume", where).returncode == 0
    assert not local.snapshot().paused
    assert cli("policy", where, "pipelined").returncode == 0
    assert str(local.snapshot().policy) == "pipelined"

    (tmp_path / "fixed").touch()
    assert cli("retry", where, "flaky").stdout == "flaky: retrying\n"
    wait_until(lambda: _state(local, "flaky") is TaskState.SUCCEEDED, what="the retry")
    wait_until(lambda: "long is working" in cli("logs", where, "long").stdout, what="the log")

    # A refusal by the supervisor is still one line.
    assert "nope" in one_line_error(cli("cancel", where, "nope"), "cancel")

    stopped = cli("stop", where)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped (exit 130)" in stopped.stdout
    wait_until(lambda: not alive(pid), what="the supervisor's end")
    local.close()
    wait_until(lambda: len(host.sshd_processes()) == 1, what="every SSH connection closed")


def test_an_unknown_or_changed_host_key_is_refused_in_one_line(
    tmp_path: Path, supervisors: Supervisors, lab: SshLab, host: SshServer, home: Path
) -> None:
    config = write_fleet(tmp_path, [{"id": "a", "script": "sleep 60"}])
    state = tmp_path / "state"
    supervisors.start(config)
    known = home / ".ssh" / "known_hosts"

    known.write_text("")  # never seen this host
    line = one_line_error(cli("status", url(host, state)), "status")
    assert f"root@127.0.0.1:{host.port}: unknown host key SHA256:" in line
    assert "refusing to connect" in line and str(known) in line

    # known_hosts lists another key for it: someone in the middle, or a reinstall.
    other = lab.root / "impostor_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        capture_output=True,
    )
    public = (lab.root / "impostor_key.pub").read_text().strip()
    known.write_text(f"[127.0.0.1]:{host.port} {public}\n")
    line = one_line_error(cli("status", url(host, state)), "status")
    assert "HOST KEY CHANGED" in line and "refusing to connect" in line

    # With its key listed, the same command goes through.
    known.write_text(host.known_hosts_line() + "\n")
    assert cli("status", url(host, state)).returncode == 0


def test_no_fleet_there_is_one_line_and_exit_2(
    tmp_path: Path, supervisors: Supervisors, host: SshServer, home: Path
) -> None:
    line = one_line_error(cli("status", url(host, tmp_path / "missing")), "status")
    assert line.endswith(f"{tmp_path / 'missing'}: no such state directory on 127.0.0.1")
    line = one_line_error(cli("pause", url(host, tmp_path)), "pause")
    assert line.endswith(f"{tmp_path}: no fleet is running there (no control.sock)")

    # `attach` itself, on a terminal, as a user types it.
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm-256color"
        os.execv(sys.executable, [sys.executable, "-m", "fleetdeck", "attach", url(host, tmp_path)])
    try:
        seen = read_for(fd, 15.0).decode(errors="replace")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 2
    assert seen.strip().splitlines() == [
        f"fleetdeck: attach: {url(host, tmp_path)}: no fleet is running there (no control.sock)"
    ]


def test_a_refused_login_or_an_unreachable_host_is_one_line(
    tmp_path: Path, host: SshServer, home: Path
) -> None:
    state = tmp_path / "state"
    key = home / ".ssh" / "id_ed25519"
    key.rename(home / ".ssh" / "elsewhere")
    line = one_line_error(cli("status", url(host, state)), "status")
    assert line.endswith(
        f"root@127.0.0.1:{host.port}: login refused (tried the keys in ~/.ssh, those "
        "~/.ssh/config names and the SSH agent's)"
    )
    (home / ".ssh" / "elsewhere").rename(key)

    port = free_port()
    line = one_line_error(cli("status", f"ssh://root@127.0.0.1:{port}{state}"), "status")
    assert line.endswith(f"root@127.0.0.1:{port}: connection refused (is sshd listening there?)")


def test_a_server_that_forbids_the_forwarding_is_named_in_one_line(
    tmp_path: Path, supervisors: Supervisors, lab: SshLab, home: Path
) -> None:
    config = write_fleet(tmp_path, [{"id": "a", "script": "sleep 60"}])
    state = tmp_path / "state"
    supervisors.start(config)
    closed = lab.start_server("noforward", extra=("AllowStreamLocalForwarding no",))
    try:
        (home / ".ssh" / "known_hosts").write_text(closed.known_hosts_line() + "\n")
        line = one_line_error(cli("status", url(closed, state)), "status")
        assert line == (
            f"fleetdeck: status: root@127.0.0.1:{closed.port} does not let this login forward "
            "to a Unix socket (AllowStreamLocalForwarding no in its sshd_config, or restrict "
            "or no-port-forwarding on the key), which attaching over SSH needs"
        )
    finally:
        lab.stop_server(closed)


def test_a_supervisor_that_died_is_told_apart_from_no_fleet(
    tmp_path: Path, supervisors: Supervisors, host: SshServer, home: Path
) -> None:
    gate = tmp_path / "gate"
    marker = f"gate-{tmp_path.name}"
    config = write_fleet(
        tmp_path, [{"id": "a", "script": f"while [ ! -e {gate} ]; do sleep 0.05; done # {marker}"}]
    )
    state = tmp_path / "state"
    pid = supervisors.start(config)
    os.kill(pid, signal.SIGKILL)  # its socket stays behind
    wait_until(lambda: not alive(pid), what="the supervisor's end")
    try:
        line = one_line_error(cli("status", url(host, state)), "status")
        assert line.endswith(
            f"{state}: no fleet is running there (its supervisor has gone; "
            "`fleetdeck start` there resumes it)"
        )
    finally:
        gate.touch()  # its agent ends by itself
        wait_until(lambda: processes_matching(marker) == [], what="the agent's end")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the test user can enter (pytest's tmp_path is root's, 0700)."""
    where = Path(tempfile.mkdtemp(prefix="fleetdeck-ssh-attach-"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_another_login_is_refused_by_the_supervisor_whatever_the_modes(
    shared_dir: Path, supervisors: Supervisors, host: SshServer, home: Path
) -> None:
    config = write_fleet(shared_dir, [{"id": "a", "script": "sleep 60"}])
    state = shared_dir / "state"
    supervisors.start(config)
    other = url(host, state, user=TEST_USER)

    # As it is made: the state dir (0700) is not the test user's to enter.
    line = one_line_error(cli("status", other), "status")
    assert line.endswith(f"{TEST_USER} cannot enter it: log in as the user the fleet runs as")

    # Opened wide by mistake: sshd connects as the login user, and the
    # supervisor refuses that uid.
    state.chmod(0o755)
    (state / "control.sock").chmod(0o666)
    uid = int(subprocess.run(["id", "-u", TEST_USER], capture_output=True, text=True).stdout)
    line = one_line_error(cli("status", other), "status")
    assert line.endswith(
        f"refused: this fleet belongs to uid {os.getuid()}, not to uid {uid} (the connecting user)"
    )


async def test_losing_the_ssh_connection_is_told_and_the_fleet_goes_on(
    tmp_path: Path, supervisors: Supervisors, lab: SshLab, home: Path
) -> None:
    config = write_fleet(tmp_path, [{"id": "a", "script": "sleep 60"}])
    state = tmp_path / "state"
    pid = supervisors.start(config)
    server = lab.start_server("dropped")
    (home / ".ssh" / "known_hosts").write_text(server.known_hosts_line() + "\n")
    client = SocketClient.connect(url(server, state))
    run = RemoteRun(client)
    try:
        lab.stop_server(server)  # sshd and its connections go away
        wait_until(lambda: client.gone is not None, what="the loss noticed")
        assert run.finished and run.result is None
        assert client.gone == (
            f"the SSH connection to root@127.0.0.1:{server.port} was lost: Connection lost"
        )
        assert isinstance(run.failure, ConnectionLost)
    finally:
        client.close()
    assert alive(pid)
    assert ssh_threads() == []


def test_the_users_ssh_config_applies(
    tmp_path: Path, supervisors: Supervisors, host: SshServer, home: Path
) -> None:
    config = write_fleet(tmp_path, [{"id": "a", "script": "sleep 60"}])
    state = tmp_path / "state"
    supervisors.start(config)
    ssh_config = home / ".ssh" / "config"
    ssh_config.write_text(f"Host fleetbox\n  HostName 127.0.0.1\n  Port {host.port}\n  User root\n")
    result = cli("status", f"ssh://fleetbox{state}", "--json")
    assert result.returncode == 0, result.stderr
    assert '"fleet": "bg"' in result.stdout

    ssh_config.write_text("Host fleetbox\n  Port many\n")
    line = one_line_error(cli("status", f"ssh://fleetbox{state}"), "status")
    assert line == (
        f"fleetdeck: status: SSH settings for fleetbox: {ssh_config} line 2: "
        "Invalid Port integer value: many"
    )
