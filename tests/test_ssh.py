"""SSH hosts against real OpenSSH: two sshd on 127.0.0.1 are two hosts.

The servers (tests/sshd.py) use throwaway host and client keys and log in as
the unprivileged `fleetdeck-test` user; one test logs in as root. "Nothing is
left on the host" is checked with `ps` on the host, which is this machine.
With CI=true these tests fail when sshd is missing instead of skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PYTHON, EngineHarness, alive
from fleetdeck.config import Fleet, HostSpec, build_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors.base import HostHealth, HostState, LaunchError, LaunchRequest
from fleetdeck.executors.ssh import SshExecutor, exit_status, printf_escape, remote_command
from fleetdeck.model import Event, EventKind, Outcome, Stage
from sshd import SshLab, SshServer, ensure_test_user, free_port, keygen, missing_tools
from sshd import processes_matching as ps_matching

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab() -> Iterator[SshLab]:
    """Two hosts, `alpha` and `beta`, both in the lab's known_hosts."""
    reason = missing_tools()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"SSH tests must run in CI: {reason}")
        pytest.skip(reason)
    ensure_test_user()
    lab = SshLab.create()
    try:
        lab.start_server("alpha")
        lab.start_server("beta")
        yield lab
    finally:
        lab.close()


@pytest.fixture
def alpha(lab: SshLab) -> SshServer:
    return lab.servers[0]


@pytest.fixture
def beta(lab: SshLab) -> SshServer:
    return lab.servers[1]


def ssh_fleet(
    tmp_path: Path,
    hosts: dict[str, dict[str, Any]],
    tasks: list[dict[str, Any]],
    *,
    agents: dict[str, dict[str, Any]],
    runners: dict[str, dict[str, Any]] | None = None,
    **fleet: Any,
) -> Fleet:
    settings: dict[str, Any] = {"name": "ssh", "state_dir": "state", "grace_period": 0.5}
    settings.update(fleet)
    data = {
        "fleet": settings,
        "hosts": hosts,
        "agents": agents,
        "runners": runners or {},
        "tasks": tasks,
    }
    return build_fleet(data, source="ssh.toml", base_dir=tmp_path)


def hold_until_up(hosts: int) -> Callable[[Engine, Event], None]:
    """A `during` hook that holds launches until `hosts` hosts are up, so that
    which host gets work does not depend on which one connected first."""
    up: set[str] = set()

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.RUN_STARTED:
            engine.pause()
        elif event.kind is EventKind.HOST_UP:
            up.add(event.data["host"])
            if len(up) == hosts:
                engine.resume()

    return during


def log_of(run_dir: Path, task: str, number: int = 1, stage: str = "agent") -> str:
    (path,) = run_dir.glob(f"runs/*/{task}.{number}.{stage}.log")
    return path.read_text()


async def wait_for_text(path: Path, text: str, timeout: float = 30.0) -> str:
    """Poll `path` (a local attempt log) until it holds `text`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            content = path.read_text()
            if text in content:
                return content
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} did not appear in {path} within {timeout}s")


async def wait_gone(marker: str, timeout: float = 20.0) -> list[str]:
    """Wait until `ps` on the host shows no process with `marker`; return what is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not ps_matching(marker):
            return []
        await asyncio.sleep(0.1)
    return ps_matching(marker)


def tree_script(marker: str) -> str:
    """A remote attempt that builds the trees supervisors lose, all ignoring SIGTERM:
    a child in the group, a child that left it with setsid (and its child), and a
    daemon orphaned by a setsid'ed parent that exits at once. Pids go to stdout."""
    return f"""
trap '' TERM
sleep {marker} & echo "pid $!"
setsid sh -c 'sleep {marker} & echo "pid $!"; echo "pid $$"; wait' &
setsid sh -c 'sleep {marker} & echo "pid $!"' &
echo "pid $$"
sleep 0.5
echo ready
wait
"""


def pids_in(log: str) -> list[int]:
    return [int(line.split()[1]) for line in log.splitlines() if line.startswith("pid ")]


def request(
    tmp_path: Path, argv: list[str], attempt_id: int = 1, **overrides: Any
) -> LaunchRequest:
    fields: dict[str, Any] = {
        "attempt_id": attempt_id,
        "task": "t",
        "stage": Stage.AGENT,
        "number": 1,
        "argv": tuple(argv),
        "env": {"FLEETDECK_TASK": "t"},
        "cwd": None,
        "log_path": str(tmp_path / f"{attempt_id}.log"),
        "output_path": str(tmp_path / f"{attempt_id}.out"),
        "inputs_path": str(tmp_path / f"{attempt_id}.inputs.json"),
        "inputs": {},
    }
    fields.update(overrides)
    return LaunchRequest(**fields)


class Opened:
    """An SshExecutor opened on its own, with the health reports it made."""

    def __init__(self, name: str, table: dict[str, Any], tmp_path: Path, grace: float = 0.5):
        self.executor = SshExecutor(name, HostSpec(**table), grace=grace, base_dir=tmp_path)
        self.reports: list[HostHealth] = []

    async def __aenter__(self) -> Opened:
        await self.executor.open(self.reports.append)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.executor.aclose()

    async def until(self, state: HostState, timeout: float = 30.0) -> HostHealth:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.reports and self.reports[-1].state is state:
                return self.reports[-1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"host never {state}: {self.reports}")


# --- through the engine ---------------------------------------------------------------

REMOTE_SCRIPT = r"""
printf '[%s]\n' "$@"
echo "task=$FLEETDECK_TASK attempt=$FLEETDECK_ATTEMPT stage=$FLEETDECK_STAGE"
echo "prompt=$FLEETDECK_PROMPT"
echo "worker=$WORKER_VAR"
echo "user=$(id -un) pwd=$(pwd)"
echo "inputs=$(cat "$FLEETDECK_INPUTS")"
echo to-stderr >&2
echo "remote saw: $(cat "$FLEETDECK_INPUTS")" > "$FLEETDECK_OUTPUT"
"""


async def test_a_remote_task_between_two_local_ones(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer
) -> None:
    """Env, literal argv, inputs in and output out, logs: as for a local attempt."""
    fleet = ssh_fleet(
        tmp_path,
        {"alpha": alpha.host()},
        [
            {"id": "up", "agent": "local", "prompt": "printf 'from local' > $FLEETDECK_OUTPUT"},
            {"id": "far", "agent": "remote", "prompt": "it's $HOME", "depends_on": ["up"]},
            {
                "id": "down",
                "agent": "local",
                "prompt": "cat $FLEETDECK_INPUTS",
                "depends_on": ["far"],
            },
        ],
        agents={
            "local": {"command": ["sh", "-c", "{prompt}"]},
            "remote": {
                "command": [
                    "sh",
                    "-c",
                    REMOTE_SCRIPT,
                    "argv0",
                    "{task}",
                    "a  b",
                    "$HOME",
                    "'q'",
                    "",
                ],
                "host": "alpha",
                "env": {"WORKER_VAR": "x y;$z"},
            },
        },
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 0, run.events
    (started,) = run.of(EventKind.ATTEMPT_STARTED, "far")
    assert started.data["host"] == "alpha" and isinstance(started.data["pid"], int)
    far = log_of(run.state_dir, "far")
    assert far.splitlines() == [
        "[far]",
        "[a  b]",
        "[$HOME]",
        "['q']",
        "[]",
        "task=far attempt=1 stage=agent",
        "prompt=it's $HOME",
        "worker=x y;$z",
        "user=fleetdeck-test pwd=/home/fleetdeck-test",
        'inputs={"up": "from local"}',
        "to-stderr",
    ]
    down = json.loads(log_of(run.state_dir, "down"))
    assert down == {"far": 'remote saw: {"up": "from local"}\n'}
    (up,) = run.of(EventKind.HOST_UP, host="alpha")
    assert up.data["latency"] > 0
    assert len(up.data["load"]) == 3 and all(isinstance(v, float) for v in up.data["load"])


async def test_slots_apply_per_host(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer, beta: SshServer
) -> None:
    fleet = ssh_fleet(
        tmp_path,
        {"alpha": alpha.host(), "beta": beta.host()},
        [{"id": f"t{i}", "agent": "remote"} for i in range(10)],
        agents={"remote": {"command": ["sleep", "0.4"], "hosts": ["alpha", "beta"], "slots": 2}},
    )
    run = await harness.run(fleet, during=hold_until_up(2))
    assert run.result.exit_code == 0
    running = {"alpha": 0, "beta": 0}
    peak = dict(running)
    where: dict[str, str] = {}
    for event in run.events:
        if event.kind is EventKind.ATTEMPT_STARTED:
            host = where[event.task or ""] = event.data["host"]
            running[host] += 1
            peak[host] = max(peak[host], running[host])
        elif event.kind is EventKind.ATTEMPT_FINISHED:
            running[where[event.task or ""]] -= 1
    assert peak == {"alpha": 2, "beta": 2}


async def test_output_streams_into_the_log_while_the_attempt_runs(
    tmp_path: Path, alpha: SshServer
) -> None:
    async with Opened("alpha", alpha.host(), tmp_path) as opened:
        await opened.until(HostState.UP)
        script = "echo first; while [ ! -e /tmp/never-$$ ]; do sleep 0.1; done"
        process = await opened.executor.start(request(tmp_path, ["sh", "-c", script]))
        assert await wait_for_text(tmp_path / "1.log", "first\n") == "first\n"
        await process.stop(0.5)
        assert await process.wait() == -15


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_timeout_and_cancel_kill_the_remote_tree(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer, how: str
) -> None:
    marker = "7001" if how == "timeout" else "7002"
    task: dict[str, Any] = {"id": "tree", "agent": "remote", "prompt": tree_script(marker)}
    if how == "timeout":
        task["timeout"] = 3
    fleet = ssh_fleet(
        tmp_path,
        {"alpha": alpha.host()},
        [task],
        agents={"remote": {"command": ["sh", "-c", "{prompt}"], "host": "alpha"}},
    )
    seen: dict[str, list[int]] = {}

    async def cancel_when_ready(engine: Engine, log: Path) -> None:
        text = await wait_for_text(log, "ready")
        seen["pids"] = pids_in(text)
        assert ps_matching(f"sleep {marker}"), "the tree should be running"
        engine.cancel("tree")

    async def record_when_ready(log: Path) -> None:
        seen["pids"] = pids_in(await wait_for_text(log, "ready"))

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.ATTEMPT_STARTED:
            (log,) = (tmp_path / "state").glob("runs/*/tree.1.agent.log")
            job = cancel_when_ready(engine, log) if how == "cancel" else record_when_ready(log)
            jobs.append(asyncio.ensure_future(job))

    jobs: list[asyncio.Future[None]] = []
    run = await harness.run(fleet, during=during)
    await asyncio.gather(*jobs)  # their assertions count too
    (finished,) = run.of(EventKind.ATTEMPT_FINISHED, "tree")
    assert finished.data["outcome"] == ("timeout" if how == "timeout" else "cancelled")
    assert len(seen["pids"]) == 5
    # The attempt ends once its whole tree is gone, not just its main process.
    assert [pid for pid in seen["pids"] if alive(pid)] == []
    assert ps_matching(f"sleep {marker}") == []


async def test_quitting_leaves_nothing_on_either_host(
    tmp_path: Path, alpha: SshServer, beta: SshServer, harness: EngineHarness
) -> None:
    fleet = ssh_fleet(
        tmp_path,
        {"alpha": alpha.host(), "beta": beta.host()},
        [{"id": f"t{i}", "agent": "remote", "prompt": tree_script("7003")} for i in range(2)],
        agents={
            "remote": {"command": ["sh", "-c", "{prompt}"], "hosts": ["alpha", "beta"]},
        },
    )
    started: set[str] = set()

    async def stop_when_both_ready(engine: Engine) -> None:
        for task in ("t0", "t1"):
            (log,) = (tmp_path / "state").glob(f"runs/*/{task}.1.agent.log")
            await wait_for_text(log, "ready")
        engine.request_stop()

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.ATTEMPT_STARTED:
            started.add(event.data["host"])
            if len(started) == 2:
                jobs.append(asyncio.ensure_future(stop_when_both_ready(engine)))

    jobs: list[asyncio.Future[None]] = []
    run = await harness.run(fleet, during=during)
    await asyncio.gather(*jobs)
    assert run.result.exit_code == 130
    assert started == {"alpha", "beta"}
    assert ps_matching("sleep 7003") == []


async def test_a_host_frozen_mid_run_fails_over_without_spending_retries(
    harness: EngineHarness, tmp_path: Path, lab: SshLab, beta: SshServer
) -> None:
    gamma = lab.start_server("gamma")
    try:
        script = "echo running; sleep 7004 & wait; echo never"
        # On beta (the rerun) the command succeeds at once; on gamma it runs until
        # the host freezes. sshd's SSH_CONNECTION ends with the server's port.
        fleet = ssh_fleet(
            tmp_path,
            {"gamma": gamma.host(), "beta": beta.host()},
            [{"id": "work", "agent": "remote", "retries": 0}],
            agents={
                "remote": {
                    "command": [
                        "sh",
                        "-c",
                        f'case "$SSH_CONNECTION" in *" {beta.port}") exit 0 ;; esac; {script}',
                    ],
                    "hosts": ["gamma", "beta"],
                },
            },
        )
        frozen_at: list[float] = []

        async def freeze_when_running() -> None:
            (log,) = (tmp_path / "state").glob("runs/*/work.1.agent.log")
            await wait_for_text(log, "running")
            gamma.freeze()
            frozen_at.append(time.monotonic())

        down_at: list[float] = []
        hold = hold_until_up(2)

        def during(engine: Engine, event: Event) -> None:
            hold(engine, event)
            if event.kind is EventKind.ATTEMPT_STARTED and event.data["host"] == "gamma":
                jobs.append(asyncio.ensure_future(freeze_when_running()))
            if event.kind is EventKind.HOST_DOWN and event.data["host"] == "gamma":
                down_at.append(time.monotonic())

        jobs: list[asyncio.Future[None]] = []
        run = await harness.run(fleet, during=during)
        await asyncio.gather(*jobs)
        assert run.result.exit_code == 0
        first, second = run.of(EventKind.ATTEMPT_FINISHED, "work")
        assert first.data["outcome"] == Outcome.LOST
        assert second.data["outcome"] == Outcome.OK
        hosts = [e.data["host"] for e in run.of(EventKind.ATTEMPT_STARTED, "work")]
        assert hosts == ["gamma", "beta"]
        assert run.of(EventKind.RETRY_SCHEDULED) == []  # a lost attempt is not a failure
        # keepalive 2 s x 3: down well within the "about 15 s".
        assert down_at and frozen_at and down_at[0] - frozen_at[0] < 15
        down = run.of(EventKind.HOST_DOWN, host="gamma")[0]
        assert down.data["state"] == "down"
        assert "connection lost" in down.data["reason"] or "unanswered" in down.data["reason"]
        # The frozen host kept running the attempt; once it answers again, sshd
        # closes the dead session and the wrapper stops everything.
        assert ps_matching("sleep 7004")
    finally:
        gamma.thaw()
    assert await wait_gone("sleep 7004") == []


async def test_a_host_that_answers_again_is_up_again(tmp_path: Path, lab: SshLab) -> None:
    """Down after keepalive x count of silence, then reconnected when it is back."""
    delta = lab.start_server("delta")
    try:
        async with Opened("delta", delta.host(), tmp_path) as opened:
            await opened.until(HostState.UP)
            delta.freeze()
            await opened.until(HostState.DOWN)
            first_down = next(r for r in opened.reports if r.state is HostState.DOWN)
            assert first_down.reason is not None
            assert first_down.reason.startswith(("connection lost", "health check unanswered"))
            delta.thaw()
            up = await opened.until(HostState.UP)
            assert up.latency is not None and up.load is not None
            process = await opened.executor.start(request(tmp_path, ["true"]))
            assert await process.wait() == 0
    finally:
        delta.thaw()


# --- the wrapper as root ------------------------------------------------------------


async def test_as_root_stop_and_leftovers_are_killed_too(tmp_path: Path, alpha: SshServer) -> None:
    """OpenSSH ignores signal requests from root sessions: the wrapper does not need them."""
    async with Opened("alpha", alpha.host(user="root"), tmp_path) as opened:
        await opened.until(HostState.UP)
        executor = opened.executor
        process = await executor.start(request(tmp_path, ["sh", "-c", tree_script("7005")]))
        log = await wait_for_text(tmp_path / "1.log", "ready")
        pids = pids_in(log)
        assert len(pids) == 5
        assert all(line.split()[2] == "root" for line in ps_matching("sleep 7005"))
        await process.stop(0.3)
        assert await process.wait() == -9  # the main shell ignores SIGTERM
        assert [pid for pid in pids if alive(pid)] == []
        # A normal exit: what the command left running is stopped with it.
        left = "sleep 7006 & echo pid $!; setsid sh -c 'sleep 7006 & echo pid $!' & sleep 0.2"
        process = await executor.start(request(tmp_path, ["sh", "-c", left], attempt_id=2))
        assert await process.wait() == 0
        assert len(pids_in((tmp_path / "2.log").read_text())) == 2
        assert ps_matching("sleep 7006") == []


async def test_launch_errors_name_the_problem(tmp_path: Path, alpha: SshServer) -> None:
    async with Opened("alpha", alpha.host(), tmp_path) as opened:
        await opened.until(HostState.UP)
        executor = opened.executor
        cases = [
            (
                ["surely-not-installed-anywhere"],
                None,
                "command not found: 'surely-not-installed-anywhere'",
            ),
            (["true"], "/no/such/dir", "workdir does not exist: /no/such/dir"),
            (["/etc/passwd"], None, "permission denied running '/etc/passwd'"),
        ]
        for i, (argv, cwd, message) in enumerate(cases):
            with pytest.raises(LaunchError) as caught:
                await executor.start(request(tmp_path, argv, attempt_id=10 + i, cwd=cwd))
            assert str(caught.value) == f"alpha: {message}"
        # A workdir under the login directory, and one relative to it.
        process = await executor.start(request(tmp_path, ["pwd"], attempt_id=20, cwd="~"))
        assert await process.wait() == 0
        assert (tmp_path / "20.log").read_text() == "/home/fleetdeck-test\n"


# --- hosts that must not be used ----------------------------------------------------


async def test_an_unknown_host_key_is_refused_and_nothing_runs(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    fleet = ssh_fleet(
        tmp_path,
        {"alpha": alpha.host(known_hosts=str(empty))},
        [{"id": "never", "agent": "remote"}],
        agents={"remote": {"command": ["touch", "/tmp/fleetdeck-test-ran"], "host": "alpha"}},
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 1
    assert run.of(EventKind.ATTEMPT_STARTED) == []
    (down,) = run.of(EventKind.HOST_DOWN, host="alpha")
    assert down.data["state"] == "failed"
    reason = down.data["reason"]
    assert reason.startswith(f"host alpha (127.0.0.1:{alpha.port}): unknown host key SHA256:")
    assert f"ssh-keyscan -p {alpha.port} 127.0.0.1 >> {empty}" in reason
    assert "trust_unknown_host_key = true in [hosts.alpha]" in reason
    (failed,) = run.of(EventKind.TASK_FAILED, "never")
    assert failed.data["reason"].startswith("no usable host for agent 'remote' (alpha: host alpha")
    assert not os.path.exists("/tmp/fleetdeck-test-ran")


async def test_a_changed_host_key_is_refused_even_when_unknown_keys_are_trusted(
    tmp_path: Path, alpha: SshServer, beta: SshServer
) -> None:
    impostor = tmp_path / "known_hosts"
    # alpha's address with beta's key: what a man in the middle would look like.
    impostor.write_text(f"[127.0.0.1]:{alpha.port} {beta.host_key_line}\n")
    table = alpha.host(known_hosts=str(impostor), trust_unknown_host_key=True)
    async with Opened("alpha", table, tmp_path) as opened:
        failed = await opened.until(HostState.FAILED)
    assert failed.reason is not None
    assert "HOST KEY CHANGED" in failed.reason
    assert f"ssh-keygen -R '[127.0.0.1]:{alpha.port}' -f {impostor}" in failed.reason
    assert [report.state for report in opened.reports] == [HostState.FAILED]


async def test_trust_unknown_host_key_accepts_a_host_not_in_known_hosts(
    tmp_path: Path, alpha: SshServer
) -> None:
    table = alpha.host(known_hosts=str(tmp_path / "missing"), trust_unknown_host_key=True)
    async with Opened("alpha", table, tmp_path) as opened:
        await opened.until(HostState.UP)
        process = await opened.executor.start(request(tmp_path, ["true"]))
        assert await process.wait() == 0


async def test_a_refused_connection_is_down_and_the_other_host_keeps_working(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer
) -> None:
    closed_port = free_port()
    fleet = ssh_fleet(
        tmp_path,
        {"nobody": alpha.host(port=closed_port), "alpha": alpha.host()},
        [{"id": f"t{i}", "agent": "remote"} for i in range(3)],
        agents={"remote": {"command": ["true"], "hosts": ["nobody", "alpha"], "slots": 3}},
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 0
    (down,) = run.of(EventKind.HOST_DOWN, host="nobody")
    assert down.data["state"] == "down"
    assert down.data["reason"] == (
        f"connection refused by 127.0.0.1:{closed_port} (is sshd listening there?); retrying"
    )
    assert {e.data["host"] for e in run.of(EventKind.ATTEMPT_STARTED)} == {"alpha"}


async def test_bad_identities_fail_the_host_with_a_clear_reason(
    tmp_path: Path, alpha: SshServer
) -> None:
    stranger = tmp_path / "stranger_key"
    keygen(stranger, "not-authorized")
    not_a_key = tmp_path / "not_a_key"
    not_a_key.write_text("hello\n")
    cases = {
        "missing": (
            alpha.host(identity="keys/nope"),
            f"identity file {tmp_path / 'keys/nope'} does not exist",
        ),
        "garbage": (alpha.host(identity=str(not_a_key)), f"identity file {not_a_key} is not"),
        "stranger": (
            alpha.host(identity=str(stranger)),
            f"authentication failed for fleetdeck-test@127.0.0.1:{alpha.port} with identity "
            f"{stranger}",
        ),
    }
    for name, (table, reason) in cases.items():
        async with Opened(name, table, tmp_path) as opened:
            failed = await opened.until(HostState.FAILED)
        assert failed.reason is not None and failed.reason.startswith(reason), failed.reason


# --- the command line, end to end -------------------------------------------------------


def test_a_fleet_on_two_hosts_runs_from_the_command_line(
    tmp_path: Path, alpha: SshServer, beta: SshServer, lab: SshLab
) -> None:
    def host_table(server: SshServer) -> str:
        return "\n".join(
            [
                "address = '127.0.0.1'",
                f"port = {server.port}",
                "user = 'fleetdeck-test'",
                f"identity = '{lab.client_key}'",
                f"known_hosts = '{lab.known_hosts}'",
                "keepalive_interval = 2",
            ]
        )

    tasks = []
    for i in range(6):
        # Four independent tasks of a second each, one slot per host: the host that
        # connects second still finds work waiting when it comes up.
        deps = f'depends_on = ["t{i - 4}"]' if i >= 4 else ""
        tasks.append(
            f'[[tasks]]\nid = "t{i}"\nprompt = "change {i}"\nagent = "coder"\nci = "ci"\n{deps}\n'
        )
    config = tmp_path / "fleet.toml"
    config.write_text(
        f"""
[fleet]
name = "two-hosts"
state_dir = "state"
grace_period = 0.5

[hosts.alpha]
{host_table(alpha)}

[hosts.beta]
{host_table(beta)}

[agents.coder]
command = ["sh", "-c", "echo \\"$FLEETDECK_PROMPT (e2e-7007)\\" > $FLEETDECK_OUTPUT; sleep 1"]
hosts = ["alpha", "beta"]
slots = 1

[runners.ci]
command = ["sh", "-c", "grep -q '^change .* (e2e-7007)$' $FLEETDECK_AGENT_OUTPUT && sleep 0.1"]
hosts = ["beta", "alpha"]
slots = 1

{chr(10).join(tasks)}
"""
    )
    done = subprocess.run(
        [PYTHON, "-m", "fleetdeck", "run", str(config), "--no-tui", "--json"],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds.count("host_up") == 2, done.stdout
    assert kinds.count("task_succeeded") == 6
    started = [event for event in events if event["event"] == "attempt_started"]
    agent_hosts = {event["host"] for event in started if event["stage"] == "agent"}
    ci_hosts = {event["host"] for event in started if event["stage"] == "ci"}
    assert agent_hosts == {"alpha", "beta"}, done.stdout
    assert ci_hosts and ci_hosts <= {"alpha", "beta"}
    assert ps_matching("(e2e-7007)") == []


# --- pieces -----------------------------------------------------------------------------


def test_exit_statuses_above_128_are_signal_deaths() -> None:
    assert [exit_status(s) for s in (0, 1, 127, 128, 129, 143, 192, 193, 255)] == [
        0,
        1,
        127,
        128,
        -1,
        -15,
        -64,
        193,
        255,
    ]


def test_the_remote_command_quotes_every_argument_on_its_own(tmp_path: Path) -> None:
    """Run the exact command a host would run, with this machine's sh: argv survives."""
    argv = ("printf", "[%s]\\n", "a b", "'", '"', "$(echo no)", "`no`", "*", "", "--x")
    command = remote_command(
        token="t0k", grace=0.2, has_inputs=False, cwd=str(tmp_path), env={"V": "$x 'y'"}, argv=argv
    )
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        "[a b]",
        "[']",
        '["]',
        "[$(echo no)]",
        "[`no`]",
        "[*]",
        "[]",
        "[--x]",
    ]
    lines = done.stderr.splitlines()
    assert lines[0].startswith("t0k started ") and lines[-1] == "t0k exit 0 0"


def test_inputs_and_the_agent_output_reach_the_command_byte_for_byte() -> None:
    """What the executor sends on stdin, as the wrapper decodes it (with this machine's sh)."""
    agent_output = "a\\b\nc\\n%s\t\\c é\n\n".encode() + b"\x00z\r\n"
    inputs = {"dep": "two\nlines"}
    command = remote_command(
        token="t0k",
        grace=0.2,
        has_inputs=True,
        has_agent_output=True,
        cwd=None,
        # The engine's local path: the host gets its own copy instead.
        env={"FLEETDECK_AGENT_OUTPUT": "/not/on/the/host"},
        argv=("sh", "-c", 'cat "$FLEETDECK_INPUTS" "$FLEETDECK_AGENT_OUTPUT"'),
    )
    stdin = json.dumps(inputs).encode() + b"\n" + printf_escape(agent_output) + b"\n"
    done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, timeout=30)
    assert done.returncode == 0
    assert done.stdout == json.dumps(inputs).encode() + b"\n" + agent_output
