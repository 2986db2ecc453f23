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
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    PYTHON,
    EngineHarness,
    alive,
    must_have,
    tree_script,
    wait_for_text,
    wait_gone,
)
from fleetdeck.config import Fleet, HostSpec, build_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors import ssh
from fleetdeck.executors.base import (
    HostHealth,
    HostLostError,
    HostState,
    LaunchError,
    LaunchRequest,
)
from fleetdeck.executors.ssh import (
    WRAPPER,
    RemoteProcess,
    SshExecutor,
    attempt_setup,
    exit_status,
    remote_command,
)
from fleetdeck.model import Event, EventKind, Outcome, Stage
from sshd import (
    NetworkNamespace,
    SshLab,
    SshServer,
    ensure_test_user,
    free_port,
    keygen,
    missing_tools,
)
from sshd import processes_matching as ps_matching

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab() -> Iterator[SshLab]:
    """Two hosts, `alpha` and `beta`, both in the lab's known_hosts."""
    must_have(missing_tools())
    ensure_test_user()
    started = time.time()
    lab = SshLab.create()
    try:
        lab.start_server("alpha")
        lab.start_server("beta")
        yield lab
    finally:
        lab.close()
    # Every wrapper removed its temp dir, even those whose stop and exit raced
    # (the last ones finish as their servers go).
    deadline = time.monotonic() + 30
    while (left := temp_dirs_since(started)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []


def temp_dirs_since(started: float) -> list[str]:
    """The remote wrappers' temp dirs (on this machine) made after `started`."""
    found = []
    for path in Path(tempfile.gettempdir()).glob("fleetdeck.*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and path.stat().st_ctime >= started:
                found.append(str(path))
    return found


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
        # Long enough for the tree to say "ready" on a loaded 2-core machine
        # (connection, wrapper start-up, the script's own 0.5 s).
        task["timeout"] = 6
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
        # A normal exit: what the command left running is stopped with it, right
        # after wait() returns. (`wait $!`: the setsid'ed shell has printed.)
        left = "sleep 7006 & echo pid $!; setsid sh -c 'sleep 7006 & echo pid $!' & wait $!"
        process = await executor.start(request(tmp_path, ["sh", "-c", left], attempt_id=2))
        assert await process.wait() == 0
        assert len(pids_in((tmp_path / "2.log").read_text())) == 2
        assert await wait_gone("sleep 7006") == []


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


# --- what the host's other users can see ------------------------------------------


async def test_secrets_and_the_prompt_stay_off_command_lines(
    tmp_path: Path, alpha: SshServer
) -> None:
    """Every user of a host can read every command line (`ps`): the worker's
    variables and the argv go to the wrapper on stdin, not there."""
    secret = "sk-secret-7011"
    prompt = "distinctive prompt 7011"
    script = 'echo "ready $API_KEY $1"; exec sleep 7011'
    async with Opened("alpha", alpha.host(), tmp_path) as opened:
        await opened.until(HostState.UP)
        process = await opened.executor.start(
            request(tmp_path, ["sh", "-c", script, "argv0", prompt], env={"API_KEY": secret})
        )
        await wait_for_text(tmp_path / "1.log", f"ready {secret} {prompt}")
        # Once the command has exec'd its sleep, its own argv is gone too.
        deadline = time.monotonic() + 30
        while not ps_matching("sleep 7011") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        listing = subprocess.run(
            ["ps", "-ww", "-e", "-o", "args="], capture_output=True, text=True, check=True
        ).stdout
        assert "sleep 7011" in listing
        assert secret not in listing
        assert "prompt 7011" not in listing
        await process.stop(0.5)


# --- exits, leftovers and output ------------------------------------------------------


async def test_wait_returns_at_the_exit_and_hurry_ends_the_cleanup(
    tmp_path: Path, alpha: SshServer
) -> None:
    """The exit is reported before what the command left is stopped: a leftover
    that ignores SIGTERM does not add the grace (600 s here) to the attempt.
    hurry() then skips the rest of the grace."""
    async with Opened("alpha", alpha.host(), tmp_path, grace=600.0) as opened:
        await opened.until(HostState.UP)
        script = "(trap '' TERM; exec sleep 7019) & echo left"
        process = await opened.executor.start(request(tmp_path, ["sh", "-c", script]))
        assert await asyncio.wait_for(process.wait(), 60) == 0
        assert ps_matching("sleep 7019"), "the leftover is in its grace period"
        opened.executor.hurry()
        assert await wait_gone("sleep 7019") == []


async def test_hurry_cuts_a_stop_short(tmp_path: Path, alpha: SshServer) -> None:
    async with Opened("alpha", alpha.host(), tmp_path, grace=600.0) as opened:
        await opened.until(HostState.UP)
        process = await opened.executor.start(request(tmp_path, ["sh", "-c", tree_script("7022")]))
        await wait_for_text(tmp_path / "1.log", "ready")
        stopping = asyncio.ensure_future(process.stop(600.0))
        await asyncio.sleep(0)  # the stop is sent
        assert not stopping.done()
        opened.executor.hurry()
        await asyncio.wait_for(stopping, 60)
        assert await process.wait() == -9  # the main shell ignores SIGTERM
        assert ps_matching("sleep 7022") == []


async def test_wait_does_not_wait_for_a_leftover_that_escaped(
    tmp_path: Path, alpha: SshServer
) -> None:
    """`env -i setsid`: no mark, another session, re-parented to init: nothing
    can find it, and it holds the channel open. The exit comes all the same."""
    async with Opened("alpha", alpha.host(), tmp_path) as opened:
        await opened.until(HostState.UP)
        script = "env -i setsid sleep 7018 & echo gone"
        process = await opened.executor.start(request(tmp_path, ["sh", "-c", script]))
        try:
            assert await asyncio.wait_for(process.wait(), 60) == 0
        finally:
            for line in ps_matching("sleep 7018"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split()[0]), signal.SIGKILL)


async def test_large_binary_output_arrives_whole(
    tmp_path: Path, lab: SshLab, alpha: SshServer
) -> None:
    """More than the channel's buffers hold, every byte value: the log and the
    output file are complete when wait() returns."""
    data = bytes(range(256)) * 16 + random.Random(7023).randbytes(300_000)
    source = lab.root / "binary-7023"  # the lab is readable by the login user
    source.write_bytes(data)
    source.chmod(0o644)
    async with Opened("alpha", alpha.host(), tmp_path) as opened:
        await opened.until(HostState.UP)
        script = f'cat {source}; cat {source} >"$FLEETDECK_OUTPUT"'
        process = await opened.executor.start(request(tmp_path, ["sh", "-c", script]))
        assert await process.wait() == 0
        assert (tmp_path / "1.log").read_bytes() == data
        assert (tmp_path / "1.out").read_bytes() == data


async def test_newlines_and_unicode_in_arguments_and_variables(
    tmp_path: Path, alpha: SshServer
) -> None:
    argv = [
        "sh",
        "-c",
        'printf "[%s]\\n" "$@"; printf "<%s>\\n" "$V" "$W"',
        "argv0",
        "two\nlines",
        "naïve ✓ 日本",
        "'\"$(x)`y`\\",
        "-n",
        "",
    ]
    env = {"V": "line one\nline two ü\n", "W": "\\n is no newline; %s %b \\0101"}
    async with Opened("alpha", alpha.host(), tmp_path) as opened:
        await opened.until(HostState.UP)
        process = await opened.executor.start(request(tmp_path, argv, env=env))
        assert await process.wait() == 0
    assert (tmp_path / "1.log").read_text() == (
        "[two\nlines]\n[naïve ✓ 日本]\n['\"$(x)`y`\\]\n[-n]\n[]\n"
        "<line one\nline two ü\n>\n<\\n is no newline; %s %b \\0101>\n"
    )


async def test_fleetdecks_variables_win_over_the_workers(tmp_path: Path, alpha: SshServer) -> None:
    """As for a local attempt: a worker's env cannot move the output, the inputs or the mark."""
    env = {
        "FLEETDECK_OUTPUT": "/tmp/not-this",
        "FLEETDECK_INPUTS": "/tmp/not-this",
        "FLEETDECK_ATTEMPT_MARK": "not-this",
    }
    script = (
        'echo "$FLEETDECK_OUTPUT|$FLEETDECK_INPUTS|$FLEETDECK_ATTEMPT_MARK"; '
        'echo mine >"$FLEETDECK_OUTPUT"'
    )
    async with Opened("alpha", alpha.host(), tmp_path) as opened:
        await opened.until(HostState.UP)
        process = await opened.executor.start(
            request(tmp_path, ["sh", "-c", script], env=env, inputs={"dep": "x"})
        )
        assert await process.wait() == 0
    output, inputs, mark = (tmp_path / "1.log").read_text().strip().split("|")
    assert output.endswith("/output") and inputs.endswith("/inputs.json")
    assert os.path.dirname(output) == os.path.dirname(inputs) != "/tmp"
    assert mark == process.token
    assert (tmp_path / "1.out").read_text() == "mine\n"


# --- sessions, health checks, closing ---------------------------------------------------


async def test_a_refused_health_check_means_busy_not_gone(tmp_path: Path, alpha: SshServer) -> None:
    """max_sessions (25) above the host's MaxSessions (20, tests/sshd.py): while 20
    attempts run, the health check's session is refused. The host stays up and
    the attempts run on."""
    table = alpha.host(max_sessions=25, keepalive_interval=1.0)
    async with Opened("alpha", table, tmp_path) as opened:
        await opened.until(HostState.UP)
        script = "echo ready; exec sleep 7015"
        processes = [
            await opened.executor.start(request(tmp_path, ["sh", "-c", script], attempt_id=i))
            for i in range(20)
        ]
        for i in range(20):
            await wait_for_text(tmp_path / f"{i}.log", "ready")
        checks = len(opened.reports)
        await asyncio.sleep(3)  # a health check a second, every one refused
        assert len(opened.reports) == checks  # no news, and no bad news
        assert all(report.state is HostState.UP for report in opened.reports)
        assert not any(process.ended for process in processes)
        # A grace generous enough for a loaded machine: twenty SIGTERMs over
        # one connection may take more than half a second to be answered.
        await asyncio.gather(*(process.stop(5.0) for process in processes))
        assert [await process.wait() for process in processes] == [-15] * 20


async def test_a_slow_health_check_does_not_take_the_host_down(
    tmp_path: Path, alpha: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only asyncssh's keepalive says a host is gone: a health check slower than
    keepalive_interval x keepalive_count (2 s here) leaves the numbers stale."""
    real_probe = SshExecutor._probe
    calls = 0

    async def slow_after_the_first(executor: SshExecutor, conn: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            await asyncio.sleep(3600)
        return await real_probe(executor, conn)

    monkeypatch.setattr(SshExecutor, "_probe", slow_after_the_first)
    table = alpha.host(keepalive_interval=1.0, keepalive_count=2)
    async with Opened("alpha", table, tmp_path) as opened:
        await opened.until(HostState.UP)
        await asyncio.sleep(4)
        assert [report.state for report in opened.reports] == [HostState.UP]
        process = await opened.executor.start(request(tmp_path, ["true"]))
        assert await process.wait() == 0


async def test_closing_while_an_attempt_waits_for_a_session(
    tmp_path: Path, alpha: SshServer
) -> None:
    """max_sessions = 1: the second attempt waits for the first one's session.
    aclose() stops the first, refuses the second, and returns."""
    async with Opened("alpha", alpha.host(max_sessions=1), tmp_path) as opened:
        await opened.until(HostState.UP)
        executor = opened.executor
        first = await executor.start(request(tmp_path, ["sh", "-c", "echo ready; exec sleep 7016"]))
        await wait_for_text(tmp_path / "1.log", "ready")
        second = asyncio.ensure_future(
            executor.start(request(tmp_path, ["sleep", "7017"], attempt_id=2))
        )
        await asyncio.sleep(0)  # it waits for the session now
        assert not second.done()
        await asyncio.wait_for(executor.aclose(), 60)
        with pytest.raises(LaunchError, match="shutting down"):
            await second
        assert await first.wait() == -15
    assert ps_matching("sleep 7016") == ps_matching("sleep 7017") == []


async def test_a_connection_closed_cleanly_loses_its_attempts(
    tmp_path: Path, alpha: SshServer
) -> None:
    """No exit status and a connection that closed without an error: the
    attempt is lost (and rerun), not failed with 255."""
    async with Opened("alpha", alpha.host(), tmp_path) as opened:
        await opened.until(HostState.UP)
        process = await opened.executor.start(
            request(tmp_path, ["sh", "-c", "echo ready; exec sleep 7020"])
        )
        await wait_for_text(tmp_path / "1.log", "ready")
        connection = opened.executor._conn  # stands for the host saying goodbye
        assert connection is not None
        connection.close()
        with pytest.raises(HostLostError, match="connection closed"):
            await process.wait()
    # sshd saw the connection end: the wrapper read the end of its input.
    assert await wait_gone("sleep 7020") == []


# --- partitions: the host cannot tell fleetdeck is gone -----------------------------------


async def test_a_host_that_hears_no_heartbeat_stops_the_attempt(
    tmp_path: Path, alpha: SshServer
) -> None:
    """The channel stays open but heartbeats stop, as in a partition: the wrapper
    stops the whole tree after keepalive_count + 2 intervals (1 s x 5 here), and
    says so: the attempt is lost."""
    table = alpha.host(keepalive_interval=1.0, keepalive_count=3)
    async with Opened("alpha", table, tmp_path) as opened:
        await opened.until(HostState.UP)
        process = await opened.executor.start(request(tmp_path, ["sh", "-c", tree_script("7012")]))
        await wait_for_text(tmp_path / "1.log", "ready")
        process.pause_heartbeats()
        with pytest.raises(HostLostError, match="no heartbeat"):
            await asyncio.wait_for(process.wait(), 60)
        assert await wait_gone("sleep 7012") == []
        # The connection was fine all along.
        assert {report.state for report in opened.reports} == {HostState.UP}


@pytest.fixture
def behind_a_link(lab: SshLab) -> Iterator[tuple[SshServer, NetworkNamespace]]:
    """A host in a network namespace of its own, behind a link the test can cut."""
    must_have(NetworkNamespace.missing())
    netns = NetworkNamespace()
    server: SshServer | None = None
    try:
        try:
            netns.create()
        except subprocess.CalledProcessError as exc:
            must_have(f"cannot make a network namespace: {exc.stderr.decode().strip()}")
        server = lab.start_server("omega", netns=netns)
        yield server, netns
    finally:
        if server is not None:
            lab.stop_server(server)
        netns.delete()


async def test_a_network_partition_stops_the_attempt_on_the_host(
    tmp_path: Path, behind_a_link: tuple[SshServer, NetworkNamespace]
) -> None:
    """A real partition: the link goes down, nobody's TCP is told, and sshd
    would keep the session for hours. fleetdeck calls the attempt lost (to
    rerun it elsewhere) and the host, hearing no heartbeat, stops it."""
    server, netns = behind_a_link
    table = server.host(keepalive_interval=1.0, keepalive_count=3)
    async with Opened("omega", table, tmp_path) as opened:
        await opened.until(HostState.UP)
        process = await opened.executor.start(request(tmp_path, ["sh", "-c", tree_script("7013")]))
        await wait_for_text(tmp_path / "1.log", "ready")
        netns.cut()
        try:
            with pytest.raises(HostLostError):
                await asyncio.wait_for(process.wait(), 60)
            await opened.until(HostState.DOWN)
            assert await wait_gone("sleep 7013", timeout=60) == []
        finally:
            netns.heal()


async def test_connecting_again_stops_what_a_lost_connection_left_running(
    tmp_path: Path, lab: SshLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition that heals before the host's watchdog fires: back on the
    host, fleetdeck stops the lost attempt before it reports the host up."""
    # Only fleetdeck may stop it here: the host's watchdog waits for ever.
    monkeypatch.setattr(ssh, "HEARTBEAT_SLACK", 100_000)
    server = lab.start_server("epsilon")
    try:
        table = server.host(keepalive_interval=1.0, keepalive_count=3)
        async with Opened("epsilon", table, tmp_path) as opened:
            await opened.until(HostState.UP)
            process = await opened.executor.start(
                request(tmp_path, ["sh", "-c", tree_script("7014")])
            )
            await wait_for_text(tmp_path / "1.log", "ready")
            # The connection goes silent for good (its session never sees the
            # end of its input); new connections are served.
            server.freeze_connections()
            with pytest.raises(HostLostError):
                await asyncio.wait_for(process.wait(), 60)
            await opened.until(HostState.DOWN)
            await opened.until(HostState.UP, timeout=60)
            assert ps_matching("sleep 7014") == []
    finally:
        lab.stop_server(server)


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
    locked = tmp_path / "locked_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(locked)],
        check=True,
        capture_output=True,
    )
    cases = {
        "missing": (
            alpha.host(identity="keys/nope"),
            f"identity file {tmp_path / 'keys/nope'} does not exist",
        ),
        "garbage": (alpha.host(identity=str(not_a_key)), f"identity file {not_a_key} is not"),
        "locked": (
            alpha.host(identity=str(locked)),
            f"identity file {locked} is protected by a passphrase: load it into ssh-agent",
        ),
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


TOKEN = "ab" * 16
# What the wrapper writes on stdout once the command's own output is all there.
END_MARK = b"\0" + TOKEN.encode() + b"\0"


def wrapper_argv(shell: tuple[str, ...] = ("sh",), grace: float = 0.2) -> list[str]:
    """The exact command a host runs, for this machine's `shell`."""
    command = remote_command(token=TOKEN, grace=grace, heartbeat=5.0, misses=5)
    return [*shell, "-c", command]


def run_wrapper(
    argv: list[str], setup: bytes, *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the wrapper here with `setup` on its stdin, which stays open until
    the wrapper exits (its end would be a stop)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        wrapper = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=cwd, env=env
        )
        assert wrapper.stdin is not None
        try:
            wrapper.stdin.write(setup)
            wrapper.stdin.flush()
            code = wrapper.wait(timeout=60)
        finally:
            wrapper.stdin.close()
            if wrapper.poll() is None:
                wrapper.kill()
                wrapper.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, code, out.read(), err.read())


def protocol(stderr: bytes) -> tuple[list[str], bytes]:
    """The wrapper's messages (without the token), and the output file's bytes
    that follow `exit`."""
    messages: list[str] = []
    rest = stderr
    while rest:
        line, _, rest = rest.partition(b"\n")
        assert line.startswith(TOKEN.encode() + b" "), line
        messages.append(line[len(TOKEN) + 1 :].decode())
        words = messages[-1].split()
        if words[0] == "exit" and words[2] != "-":
            assert len(rest) == int(words[2])
            return messages, rest
    return messages, b""


def test_the_command_takes_its_arguments_literally(tmp_path: Path) -> None:
    """The command a host would run, with this machine's sh: argv survives."""
    argv = ("printf", "[%s]\\n", "a b", "'", '"', "$(echo no)", "`no`", "*", "", "--x")
    setup = attempt_setup(argv=argv, env={"V": "$x 'y'"}, cwd=str(tmp_path), inputs={})
    done = run_wrapper(wrapper_argv(), setup, cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.endswith(END_MARK)
    assert done.stdout.removesuffix(END_MARK).splitlines() == [
        b"[a b]",
        b"[']",
        b'["]',
        b"[$(echo no)]",
        b"[`no`]",
        b"[*]",
        b"[]",
        b"[--x]",
    ]
    messages, _ = protocol(done.stderr)
    assert messages[0].startswith("started ") and messages[1:] == ["exit 0 -"]


def test_inputs_and_the_agent_output_reach_the_command_byte_for_byte(tmp_path: Path) -> None:
    """What the executor sends on stdin, as the wrapper decodes it (with this machine's sh)."""
    agent_output = "a\\b\nc\\n%s\t\\c é\n\n".encode() + b"\x00z\r\n"
    inputs = {"dep": "two\nlines"}
    setup = attempt_setup(
        argv=("sh", "-c", 'cat "$FLEETDECK_INPUTS" "$FLEETDECK_AGENT_OUTPUT"'),
        env={},
        cwd=None,
        inputs=inputs,
        agent_output=agent_output,
    )
    done = run_wrapper(wrapper_argv(), setup, cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout == json.dumps(inputs).encode() + agent_output + END_MARK


@pytest.mark.parametrize("shell", [("sh",), ("bash", "--posix")], ids=["sh", "bash"])
def test_a_stop_in_the_same_write_as_the_attempt_is_not_lost(
    tmp_path: Path, shell: tuple[str, ...]
) -> None:
    """The wrapper reads the attempt line by line: not a byte past "go". Then it
    stops the command, reports, cleans up and exits 0, whichever POSIX shell runs
    it (bash is /bin/sh on Fedora)."""
    must_have(None if shutil.which(shell[0]) else f"{shell[0]} is missing")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    setup = attempt_setup(
        argv=("sh", "-c", "exec sleep 7021"), env={}, cwd=None, inputs={"dep": "x"}
    )
    argv = [*shell, "-c", WRAPPER, "fleetdeck", "attempt", TOKEN, "20", "5", "5"]
    env = {**os.environ, "TMPDIR": str(scratch)}
    done = run_wrapper(argv, setup + b"stop 500\n", cwd=tmp_path, env=env)
    messages, _ = protocol(done.stderr)
    assert messages[1:] == ["exit 143 -"]  # SIGTERM (sh cannot tell it from exit 143)
    assert done.returncode == 0
    assert list(scratch.iterdir()) == []  # its temp dir is gone
    assert ps_matching("sleep 7021") == []


def test_a_workdir_is_taken_literally(tmp_path: Path) -> None:
    """ "-" is not $OLDPWD, and $CDPATH does not send a relative workdir elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    (elsewhere / "-").mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "CDPATH": str(elsewhere), "OLDPWD": str(elsewhere)}
    for workdir in ("-", "sub"):
        setup = attempt_setup(argv=("pwd",), env={}, cwd=workdir, inputs={})
        done = run_wrapper(wrapper_argv(), setup, cwd=home, env=env)
        assert protocol(done.stderr)[0] == ["error workdir"], workdir
        (home / workdir).mkdir()
        done = run_wrapper(wrapper_argv(), setup, cwd=home, env=env)
        assert done.stdout == f"{home}/{workdir}\n".encode() + END_MARK


def test_the_wrapper_runs_with_busybox_tools(tmp_path: Path) -> None:
    """Alpine-like hosts: BusyBox's setsid (no -w), awk, grep, mktemp..."""
    busybox = shutil.which("busybox")
    must_have(None if busybox else "busybox is missing (apt-get install busybox, or `make test`)")
    assert busybox is not None
    applets = tmp_path / "bin"
    applets.mkdir()
    subprocess.run([busybox, "--install", "-s", str(applets)], check=True)
    # The command: its own session leader, a leftover that ignores SIGTERM, an output.
    script = (
        "(trap '' TERM; exec sleep 7024) & echo made >\"$FLEETDECK_OUTPUT\"; "
        'set -- $(cat /proc/$$/stat); echo "pid $1 session $6"'
    )
    argv = [busybox, "sh", "-c", WRAPPER, "fleetdeck", "attempt", TOKEN, "20", "5", "5"]
    setup = attempt_setup(argv=("sh", "-c", script), env={}, cwd=None, inputs={})
    done = run_wrapper(argv, setup, cwd=tmp_path, env={"PATH": str(applets)})
    messages, output = protocol(done.stderr)
    assert messages[1:] == ["exit 0 5"] and output == b"made\n"
    words = done.stdout.removesuffix(END_MARK).decode().split()
    assert words[0] == "pid" and words[1] == words[3]
    assert ps_matching("sleep 7024") == []


def test_a_host_without_proc_is_refused(tmp_path: Path) -> None:
    """/proc hidden by an empty mount, as on a host that is not Linux."""
    must_have(missing_tools() or (None if shutil.which("unshare") else "unshare is missing"))
    hide_proc = 'mount -t tmpfs none /proc && exec "$@"'
    argv = ["unshare", "--mount", "sh", "-c", hide_proc, "sh", *wrapper_argv()]
    setup = attempt_setup(argv=("true",), env={}, cwd=None, inputs={})
    done = run_wrapper(argv, setup, cwd=tmp_path)
    assert protocol(done.stderr)[0] == ["error noproc"]


async def test_the_operator_is_told_that_hosts_must_run_linux(tmp_path: Path) -> None:
    executor = SshExecutor("mac", HostSpec(address="mac.example"), grace=0.5, base_dir=tmp_path)
    process = RemoteProcess(
        executor, request(tmp_path, ["true"]), log_fd=-1, setup=b"", heartbeat=60.0
    )
    process.on_control(f"{process.token} error noproc\n".encode())
    with pytest.raises(LaunchError, match=r"^mac: the host has no /proc: .* Linux hosts only"):
        await process.started


class RecordingChannel:
    """Stands for an asyncssh channel: keeps what is written to it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


async def test_a_stop_asked_before_the_channel_opens_follows_the_attempt(tmp_path: Path) -> None:
    executor = SshExecutor("alpha", HostSpec(address="127.0.0.1"), grace=0.5, base_dir=tmp_path)
    process = RemoteProcess(
        executor, request(tmp_path, ["true"]), log_fd=-1, setup=b"the attempt\n", heartbeat=60.0
    )
    stopping = asyncio.ensure_future(process.stop(1.5))
    await asyncio.sleep(0)
    process.hurry()
    channel = RecordingChannel()
    process.attach(channel)  # type: ignore[arg-type]
    assert channel.written == [b"the attempt\n", b"stop 150\nkill\n"]
    assert not stopping.done()
    process.on_closed(None, 143)
    await stopping


async def test_what_sh_cannot_carry_is_refused_before_anything_runs(tmp_path: Path) -> None:
    executor = SshExecutor("alpha", HostSpec(address="127.0.0.1"), grace=0.5, base_dir=tmp_path)
    cases = [
        ({"A": "x\0y"}, "a command argument or variable holds a NUL byte"),
        ({"MY-VAR": "x"}, "cannot set the variable 'MY-VAR' on an SSH host"),
        ({"1X": "x"}, "cannot set the variable '1X' on an SSH host"),
        ({"PATH": "/bin\n/usr/bin"}, "the command's name or PATH holds a newline"),
    ]
    for env, message in cases:
        with pytest.raises(LaunchError, match=f"^alpha: {message}"):
            await executor.start(request(tmp_path, ["true"], env=env))
