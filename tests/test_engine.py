"""The engine with real subprocesses: policies, retries, timeouts, isolation, data flow."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import fleetdeck.journal
from conftest import PYTHON, EngineHarness, alive, make_fleet, read_pids
from fleetdeck.engine import CommandError, Engine
from fleetdeck.model import Event, EventKind, Outcome, Stage, TaskState
from fleetdeck.testing import LOST, ManualExecutor


def sh(prompt: str, **extra: object) -> dict[str, object]:
    """Task fields for a shell one-liner run by the default `sh` agent."""
    return {"agent": "sh", "prompt": prompt, **extra}


async def test_wave_runs_independent_tasks_at_once(harness: EngineHarness, tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, [{"id": f"t{i}", **sh("sleep 0.3")} for i in range(3)])
    run = await harness.run(fleet)
    assert run.result.exit_code == 0
    first_finish = run.index(EventKind.ATTEMPT_FINISHED)
    starts = [run.index(EventKind.ATTEMPT_STARTED, f"t{i}") for i in range(3)]
    assert max(starts) < first_finish, "all three should start before any finishes"


async def test_sequential_keeps_one_task_in_flight_through_ci(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """From agent start to CI result, nothing else starts (sequential's promise)."""
    fleet = make_fleet(
        tmp_path,
        [{"id": f"t{i}", **sh("sleep 0.05"), "ci": "ci"} for i in range(4)],
        runners={"ci": {"command": ["sh", "-c", "sleep 0.05"], "slots": 4}},
        policy="sequential",
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 0
    in_flight: str | None = None
    for event in run.events:
        if event.kind is EventKind.ATTEMPT_STARTED:
            assert in_flight in (None, event.task), f"{event.task} started during {in_flight}"
            in_flight = event.task
        elif event.kind is EventKind.TASK_SUCCEEDED:
            in_flight = None
    assert len(run.of(EventKind.TASK_SUCCEEDED)) == 4


async def test_sequential_counts_retry_wait_as_in_flight(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """A task waiting to retry keeps its place; the next task waits for it."""
    flag = tmp_path / "failed-once"
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "flaky", **sh(f"[ -e {flag} ] || {{ touch {flag}; exit 1; }}"), "retries": 1},
            {"id": "next", **sh("true")},
        ],
        policy="sequential",
        retry_backoff=0.2,
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 0
    assert run.index(EventKind.ATTEMPT_STARTED, "next") > run.index(
        EventKind.TASK_SUCCEEDED, "flaky"
    )


async def test_wave_starts_a_task_as_soon_as_its_own_dependencies_are_done(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """No barrier: `after-fast` must not wait for `slow`, which is in the same wave."""
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "fast", **sh("true")},
            {"id": "slow", **sh("sleep 1")},
            {"id": "after-fast", **sh("true"), "depends_on": ["fast"]},
        ],
    )
    run = await harness.run(fleet)
    assert run.index(EventKind.ATTEMPT_STARTED, "after-fast") < run.index(
        EventKind.ATTEMPT_FINISHED, "slow"
    )


async def test_ready_queue_takes_priority_then_critical_path_then_config_order(
    harness: EngineHarness, tmp_path: Path
) -> None:
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "plain-a", **sh("true")},
            {"id": "plain-b", **sh("true")},
            {"id": "chain-head", **sh("true")},
            {"id": "chain-tail", **sh("true"), "depends_on": ["chain-head"]},
            {"id": "urgent", **sh("true"), "priority": 5},
        ],
        agents={"sh": {"command": ["sh", "-c", "{prompt}"], "slots": 1}},
    )
    run = await harness.run(fleet)
    started = [e.task for e in run.of(EventKind.ATTEMPT_STARTED)]
    assert started == ["urgent", "chain-head", "plain-a", "plain-b", "chain-tail"]


async def test_max_in_flight_caps_wave(harness: EngineHarness, tmp_path: Path) -> None:
    fleet = make_fleet(
        tmp_path, [{"id": f"t{i}", **sh("sleep 0.1")} for i in range(6)], max_in_flight=2
    )
    run = await harness.run(fleet)
    running = peak = 0
    for event in run.events:
        if event.kind is EventKind.ATTEMPT_STARTED:
            running += 1
            peak = max(peak, running)
        elif event.kind is EventKind.ATTEMPT_FINISHED:
            running -= 1
    assert peak == 2


async def test_agent_slots_bound_parallelism(harness: EngineHarness, tmp_path: Path) -> None:
    fleet = make_fleet(
        tmp_path,
        [{"id": f"t{i}", **sh("sleep 0.1")} for i in range(5)],
        agents={"sh": {"command": ["sh", "-c", "{prompt}"], "slots": 2}},
    )
    run = await harness.run(fleet)
    running = peak = 0
    for event in run.events:
        if event.kind is EventKind.ATTEMPT_STARTED:
            running += 1
            peak = max(peak, running)
        elif event.kind is EventKind.ATTEMPT_FINISHED:
            running -= 1
    assert peak == 2
    assert run.result.exit_code == 0


async def test_one_slot_runner_never_runs_two_ci_attempts_at_once(
    harness: EngineHarness, tmp_path: Path
) -> None:
    fleet = make_fleet(
        tmp_path,
        [{"id": f"pr{i}", **sh("true"), "ci": "ci"} for i in range(4)],
        runners={"ci": {"command": ["sh", "-c", "sleep 0.2"], "slots": 1}},
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 0
    busy = 0
    for event in run.events:
        if event.data.get("stage") != Stage.CI:
            continue
        if event.kind is EventKind.ATTEMPT_STARTED:
            busy += 1
            assert busy == 1, "two CI attempts overlapped on a one-slot runner"
        elif event.kind is EventKind.ATTEMPT_FINISHED:
            busy -= 1
    # Four agents finished at once in front of one runner: a queue formed.
    assert max(e.data["position"] for e in run.of(EventKind.CI_QUEUED)) >= 2
    assert run.result.report.ci_wait_mean is not None and run.result.report.ci_wait_mean > 0


async def test_failed_attempt_is_retried_with_backoff(
    harness: EngineHarness, tmp_path: Path
) -> None:
    attempts = tmp_path / "attempts"
    script = f'echo "$FLEETDECK_ATTEMPT" >> {attempts}; [ "$FLEETDECK_ATTEMPT" -ge 3 ]'
    fleet = make_fleet(tmp_path, [{"id": "flaky", **sh(script), "retries": 3}], retry_backoff=0.1)
    run = await harness.run(fleet)
    assert run.result.exit_code == 0
    assert attempts.read_text().split() == ["1", "2", "3"]
    delays = [e.data["delay"] for e in run.of(EventKind.RETRY_SCHEDULED)]
    # Exponential with equal jitter: base*2^(n-1) halved plus up to the other half.
    assert 0.05 <= delays[0] <= 0.1
    assert 0.1 <= delays[1] <= 0.2
    assert [e.data["attempt"] for e in run.of(EventKind.RETRY_SCHEDULED)] == [2, 3]
    assert run.engine.task("flaky").agent_attempts == 3


async def test_ci_failure_reruns_the_agent_stage(harness: EngineHarness, tmp_path: Path) -> None:
    marker = tmp_path / "ci-failed"
    fleet = make_fleet(
        tmp_path,
        [{"id": "pr", **sh("true"), "ci": "ci", "retries": 1}],
        runners={
            # Literal braces in a command template are doubled.
            "ci": {"command": ["sh", "-c", f"[ -e {marker} ] || {{{{ touch {marker}; exit 1; }}}}"]}
        },
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 0
    stages = [(e.data["stage"], e.data["attempt"]) for e in run.of(EventKind.ATTEMPT_STARTED)]
    assert stages == [("agent", 1), ("ci", 1), ("agent", 2), ("ci", 2)]


async def test_failure_blocks_everything_downstream_and_siblings_go_on(
    harness: EngineHarness, tmp_path: Path
) -> None:
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "broken", **sh("exit 3"), "retries": 1},
            {"id": "child", **sh("true"), "depends_on": ["broken"]},
            {"id": "grandchild", **sh("true"), "depends_on": ["child"]},
            {"id": "sibling", **sh("sleep 0.2")},
            {"id": "after-sibling", **sh("true"), "depends_on": ["sibling"]},
        ],
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 1
    assert run.state("broken") == "failed"
    assert run.state("child") == run.state("grandchild") == "blocked"
    assert run.engine.task("grandchild").blocked_by == "broken"
    assert run.state("sibling") == run.state("after-sibling") == "succeeded"
    finished = run.of(EventKind.ATTEMPT_FINISHED, "broken")
    assert [(e.data["outcome"], e.data["exit_code"]) for e in finished] == [
        (Outcome.FAILED, 3),
        (Outcome.FAILED, 3),
    ]
    assert not run.of(EventKind.ATTEMPT_STARTED, "child")


async def test_timeout_fails_the_attempt_and_kills_it(
    harness: EngineHarness, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    fleet = make_fleet(
        tmp_path, [{"id": "hang", **sh(f"echo $$ > {pidfile}; exec sleep 30"), "timeout": 0.5}]
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 1
    (finished,) = run.of(EventKind.ATTEMPT_FINISHED, "hang")
    assert finished.data["outcome"] == Outcome.TIMEOUT
    assert "timed out after 0.5s" in finished.data["reason"]
    assert not alive(int(pidfile.read_text()))


async def test_cancel_kills_a_tree_with_setsid_and_sigterm_ignoring_children(
    harness: EngineHarness, tmp_path: Path, tree_agent: Path
) -> None:
    pidfile = tmp_path / "pids"
    fleet = make_fleet(
        tmp_path,
        [{"id": "tree", "agent": "py", "prompt": str(pidfile)}],
        agents={"py": {"command": [PYTHON, str(tree_agent), "{prompt}"]}},
        grace_period=0.3,
    )
    ready = Path(f"{pidfile}.ready")
    engine_box: list[Engine] = []

    async def cancel_when_ready() -> None:
        while not ready.exists():
            await asyncio.sleep(0.02)
        engine_box[0].cancel("tree")

    def during(engine: Engine, event: Event) -> None:
        if not engine_box:
            engine_box.append(engine)
            asyncio.get_running_loop().create_task(cancel_when_ready())

    run = await harness.run(fleet, during=during)
    pids = read_pids(pidfile)
    assert len(pids) == 4  # the agent, two children, one grandchild
    # When the run returns, the whole tree is already gone: no waiting.
    assert [pid for pid in pids if alive(pid)] == [], "cancel left processes behind"
    assert run.state("tree") == "cancelled"
    (finished,) = run.of(EventKind.ATTEMPT_FINISHED, "tree")
    assert finished.data["outcome"] == Outcome.CANCELLED


async def test_outputs_flow_into_dependents_inputs(harness: EngineHarness, tmp_path: Path) -> None:
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "alpha", **sh('printf "from alpha" > "$FLEETDECK_OUTPUT"')},
            {"id": "beta", **sh('printf "from beta" > "$FLEETDECK_OUTPUT"')},
            {
                "id": "merge",
                **sh('cat "$FLEETDECK_INPUTS" > "$FLEETDECK_OUTPUT"'),
                "depends_on": ["alpha", "beta"],
            },
        ],
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 0
    output = Path(run.engine.task("merge").output_path or "")
    assert json.loads(output.read_text()) == {"alpha": "from alpha", "beta": "from beta"}


async def test_templates_are_formatted_per_argv_element_without_a_shell(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """A prompt full of shell syntax reaches the agent as one literal argument."""
    prompt = 'fix it; rm -rf / $(whoami) `id` "quoted" {braces}'
    script = tmp_path / "echo_args.py"
    script.write_text(
        "import json, os, sys\n"
        "env = {k: v for k, v in os.environ.items()\n"
        "       if k.startswith('FLEETDECK_') or k == 'EXTRA'}\n"
        "with open(os.environ['FLEETDECK_OUTPUT'], 'w') as out:\n"
        "    json.dump({'argv': sys.argv[1:], 'env': env}, out)\n"
    )
    fleet = make_fleet(
        tmp_path,
        [{"id": "lit", "agent": "py", "prompt": prompt}],
        agents={
            "py": {
                "command": [
                    PYTHON,
                    str(script),
                    "{task}",
                    "{prompt}",
                    "attempt-{attempt}",
                    "{workdir}",
                ],
                "env": {"EXTRA": "yes"},
                "workdir": "work",
            }
        },
    )
    (tmp_path / "work").mkdir()
    run = await harness.run(fleet)
    assert run.result.exit_code == 0
    seen = json.loads(Path(run.engine.task("lit").output_path or "").read_text())
    workdir = str((tmp_path / "work").resolve())
    assert seen["argv"] == ["lit", prompt, "attempt-1", workdir]
    env = seen["env"]
    assert env["FLEETDECK_TASK"] == "lit"
    assert env["FLEETDECK_ATTEMPT"] == "1"
    assert env["FLEETDECK_PROMPT"] == prompt
    assert env["EXTRA"] == "yes"
    assert json.loads(Path(env["FLEETDECK_INPUTS"]).read_text()) == {}
    assert env["FLEETDECK_OUTPUT"].endswith("lit.1.agent.out")


async def test_log_file_gets_stdout_and_stderr(harness: EngineHarness, tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, [{"id": "noisy", **sh("echo out; echo err >&2")}])
    run = await harness.run(fleet)
    log = Path(run.engine.task("noisy").attempts[0].log_path)
    assert log.read_text().split() == ["out", "err"]
    assert oct(log.stat().st_mode & 0o777) == oct(0o600)


async def test_a_missing_command_fails_the_attempt_with_a_clear_reason(
    harness: EngineHarness, tmp_path: Path
) -> None:
    fleet = make_fleet(
        tmp_path,
        [{"id": "typo", "agent": "ghost", "prompt": "x"}],
        agents={"ghost": {"command": ["no-such-agent-binary", "{prompt}"]}},
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 1
    (finished,) = run.of(EventKind.ATTEMPT_FINISHED, "typo")
    assert finished.data["outcome"] == Outcome.FAILED
    assert finished.data["error"] == "command not found: 'no-such-agent-binary'"


async def test_switching_policy_never_kills_work_in_flight(
    harness: EngineHarness, tmp_path: Path
) -> None:
    fleet = make_fleet(tmp_path, [{"id": f"t{i}", **sh("sleep 0.3")} for i in range(5)])
    switched: list[int] = []

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.ATTEMPT_STARTED and not switched:
            switched.append(1)
            engine.set_policy("sequential")

    run = await harness.run(fleet, during=during)
    assert run.result.exit_code == 0
    outcomes = {e.data["outcome"] for e in run.of(EventKind.ATTEMPT_FINISHED)}
    assert outcomes == {Outcome.OK}
    assert run.of(EventKind.POLICY_CHANGED, policy="sequential", previous="wave")
    # After the switch, a new task starts only when nothing else is in flight.
    switch_at = run.index(EventKind.POLICY_CHANGED)
    running = {e.task for e in run.events[:switch_at] if e.kind is EventKind.ATTEMPT_STARTED}
    running -= {e.task for e in run.events[:switch_at] if e.kind is EventKind.TASK_SUCCEEDED}
    for event in run.events[switch_at:]:
        if event.kind is EventKind.TASK_SUCCEEDED:
            running.discard(event.task)
        elif event.kind is EventKind.ATTEMPT_STARTED:
            assert not running, f"{event.task} started while {running} were in flight"
            running.add(event.task)


async def test_pause_holds_new_launches_and_resume_releases_them(
    harness: EngineHarness, tmp_path: Path
) -> None:
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "first", **sh("sleep 0.2")},
            {"id": "second", **sh("true"), "depends_on": ["first"]},
        ],
    )
    paused_at: list[float] = []

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.ATTEMPT_STARTED and event.task == "first":
            engine.pause()
            paused_at.append(event.ts)
            asyncio.get_running_loop().call_later(0.6, engine.resume)

    run = await harness.run(fleet, during=during)
    assert run.result.exit_code == 0
    ready = run.of(EventKind.TASK_READY, "second")[0]
    started = run.of(EventKind.ATTEMPT_STARTED, "second")[0]
    resumed = run.of(EventKind.RESUMED)[0]
    assert ready.ts < resumed.ts <= started.ts
    assert run.index(EventKind.RESUMED) < run.index(EventKind.ATTEMPT_STARTED, "second")


async def test_operator_retry_reruns_a_failed_task_and_releases_its_dependents(
    harness: EngineHarness, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "needs-fix", **sh(f"[ -e {go} ]")},
            {"id": "child", **sh("true"), "depends_on": ["needs-fix"]},
            {"id": "grandchild", **sh("true"), "depends_on": ["child"]},
        ],
    )

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.TASK_BLOCKED and event.task == "grandchild":
            go.touch()  # the operator fixed the cause
            engine.retry("needs-fix")
        if event.kind is EventKind.TASK_SUCCEEDED and event.task == "grandchild":
            engine.request_stop()

    run = await harness.run(fleet, during=during, until_settled=False)
    assert [run.state(t) for t in ("needs-fix", "child", "grandchild")] == ["succeeded"] * 3
    requeued = [(e.task, e.data["state"]) for e in run.of(EventKind.TASK_REQUEUED)]
    assert requeued == [("needs-fix", "ready"), ("child", "pending"), ("grandchild", "pending")]
    assert run.result.exit_code == 0  # stopped after everything ended: nothing interrupted


async def test_retrying_a_blocked_root_retries_the_failure_that_blocks_it(
    harness: EngineHarness, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "upstream", **sh(f"[ -e {go} ]")},
            {"id": "blocked-root", **sh("true"), "depends_on": ["upstream"]},
            {"id": "deeper", **sh("true"), "depends_on": ["blocked-root"]},
        ],
    )
    errors: list[str] = []

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.TASK_BLOCKED and event.task == "deeper":
            try:
                engine.retry("deeper")  # not a root: refused, naming the failure
            except CommandError as exc:
                errors.append(str(exc))
            go.touch()
            engine.retry("blocked-root")
        if event.kind is EventKind.TASK_SUCCEEDED and event.task == "deeper":
            engine.request_stop()

    run = await harness.run(fleet, during=during, until_settled=False)
    assert errors == [
        "cannot retry 'deeper': it is blocked by 'upstream', which is not one of its own "
        "dependencies; retry 'upstream'"
    ]
    assert run.state("upstream") == run.state("deeper") == "succeeded"


async def test_commands_refuse_what_makes_no_sense(harness: EngineHarness, tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, [{"id": "lint", **sh("sleep 0.3")}])
    errors: list[str] = []

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.ATTEMPT_STARTED:
            for command in (
                lambda: engine.retry("lint"),
                lambda: engine.cancel("lnt"),
                lambda: engine.set_policy("wav"),
            ):
                try:
                    command()
                except CommandError as exc:
                    errors.append(str(exc))

    run = await harness.run(fleet, during=during)
    assert run.result.exit_code == 0
    assert errors == [
        "cannot retry 'lint': it is running; only failed, cancelled or blocked tasks can be "
        "retried",
        "unknown task 'lnt' (did you mean 'lint'?)",
        "unknown policy 'wav'; choose one of sequential, wave, pipelined, adaptive",
    ]


async def test_cancelling_a_pending_task_blocks_its_dependents(
    harness: EngineHarness, tmp_path: Path
) -> None:
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "first", **sh("sleep 0.2")},
            {"id": "second", **sh("true"), "depends_on": ["first"]},
            {"id": "third", **sh("true"), "depends_on": ["second"]},
        ],
    )

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.ATTEMPT_STARTED and event.task == "first":
            engine.cancel("second")

    run = await harness.run(fleet, during=during)
    assert run.state("first") == "succeeded"
    assert run.state("second") == "cancelled"
    assert run.state("third") == "blocked"
    assert run.result.exit_code == 1


async def test_request_stop_interrupts_and_leaves_no_process(
    harness: EngineHarness, tmp_path: Path, tree_agent: Path
) -> None:
    pidfile = tmp_path / "pids"
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "tree", "agent": "py", "prompt": str(pidfile)},
            {"id": "later", **sh("true"), "depends_on": ["tree"]},
        ],
        agents={
            "py": {"command": [PYTHON, str(tree_agent), "{prompt}"]},
            "sh": {"command": ["sh", "-c", "{prompt}"]},
        },
        grace_period=0.3,
    )
    ready = Path(f"{pidfile}.ready")

    async def stop_when_ready(engine: Engine) -> None:
        while not ready.exists():
            await asyncio.sleep(0.02)
        engine.request_stop()

    started: list[int] = []

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.ATTEMPT_STARTED and not started:
            started.append(1)
            asyncio.get_running_loop().create_task(stop_when_ready(engine))

    run = await harness.run(fleet, during=during)
    assert run.result.exit_code == 130
    assert run.result.interrupted
    assert [pid for pid in read_pids(pidfile) if alive(pid)] == []
    (finished,) = run.of(EventKind.ATTEMPT_FINISHED, "tree")
    assert finished.data["reason"] == "interrupted"
    # Interrupted work keeps its state for a later resume; nothing is marked failed.
    assert run.engine.task("tree").state is TaskState.RUNNING
    assert run.of(EventKind.RUN_FINISHED, status="interrupted")


async def test_journal_holds_every_published_event_and_each_attempt(
    harness: EngineHarness, tmp_path: Path
) -> None:
    fleet = make_fleet(
        tmp_path,
        [{"id": "a", **sh("true")}, {"id": "b", **sh("exit 1"), "depends_on": []}],
    )
    run = await harness.run(fleet)
    db = sqlite3.connect(run.state_dir / "journal.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute("SELECT event, task FROM events ORDER BY seq").fetchall()
    assert rows == [(str(e.kind), e.task) for e in run.events]
    attempts = db.execute(
        "SELECT task, stage, number, pid, outcome, exit_code FROM attempts ORDER BY attempt_id"
    ).fetchall()
    pids = {e.task: e.data["pid"] for e in run.of(EventKind.ATTEMPT_STARTED)}
    assert sorted(attempts) == [
        ("a", "agent", 1, pids["a"], "ok", 0),
        ("b", "agent", 1, pids["b"], "failed", 1),
    ]
    (status,) = db.execute("SELECT status FROM runs").fetchone()
    assert status == "finished"


async def test_a_success_is_durable_before_any_dependent_starts(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """Read the journal from outside at the moment a dependent becomes ready."""
    fleet = make_fleet(
        tmp_path,
        [{"id": "up", **sh("true")}, {"id": "down", **sh("true"), "depends_on": ["up"]}],
    )
    seen: list[list[tuple[str, str]]] = []

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.TASK_READY and event.task == "down":
            db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
            seen.append(db.execute("SELECT event, task FROM events").fetchall())
            db.close()

    await harness.run(fleet, during=during)
    assert ("task_succeeded", "up") in seen[0]


async def test_a_dependent_process_finds_its_dependencies_success_in_the_journal(
    harness: EngineHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The promise itself: a dependent's launch is decided with its dependency's
    success, but its process starts only once the journal holds that success. Each
    dependent reads the journal from its own process and records what it found.
    Commits are slowed down, so that a process started early would find nothing."""
    write_rows = fleetdeck.journal._write_rows

    def slow_write_rows(db: sqlite3.Connection, rows: Any) -> None:
        time.sleep(0.2)
        write_rows(db, rows)

    monkeypatch.setattr(fleetdeck.journal, "_write_rows", slow_write_rows)
    journal = tmp_path / "state" / "journal.sqlite3"
    reader = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
        " print(db.execute(\"SELECT count(*) FROM events WHERE event = 'task_succeeded'"
        ' AND task = ?", (sys.argv[2],)).fetchone()[0])'
    )
    agents = {
        "sh": {"command": ["sh", "-c", "{prompt}"], "slots": 4},
        "check": {"command": [PYTHON, "-c", reader, str(journal), "{prompt}"], "slots": 4},
    }
    # A chain: each link checks the one before it; several links per commit.
    tasks: list[dict[str, object]] = [{"id": "t0", "agent": "sh", "prompt": "true"}]
    tasks += [
        {"id": f"t{i}", "agent": "check", "prompt": f"t{i - 1}", "depends_on": [f"t{i - 1}"]}
        for i in range(1, 6)
    ]
    fleet = make_fleet(tmp_path, tasks, agents=agents)
    run = await harness.run(fleet)
    assert run.result.exit_code == 0
    run_dir = run.state_dir / "runs" / str(run.result.run_id)
    found = {i: (run_dir / f"t{i}.1.agent.log").read_text().strip() for i in range(1, 6)}
    assert found == dict.fromkeys(range(1, 6), "1")


async def test_lost_attempts_do_not_spend_retries(harness: EngineHarness, tmp_path: Path) -> None:
    """An executor whose host vanishes reports `lost`; the task runs again, no charge."""
    executor = ManualExecutor(script=[LOST, LOST, 0])
    fleet = make_fleet(tmp_path, [{"id": "remote", **sh("true"), "retries": 0}])
    run = await harness.run(fleet, executors={"local": executor})
    assert run.result.exit_code == 0
    outcomes = [e.data["outcome"] for e in run.of(EventKind.ATTEMPT_FINISHED)]
    assert outcomes == [Outcome.LOST, Outcome.LOST, Outcome.OK]
    assert not run.of(EventKind.RETRY_SCHEDULED)


@pytest.mark.parametrize("policy", ["sequential", "wave"])
async def test_report_counts_states_attempts_and_retries(
    harness: EngineHarness, tmp_path: Path, policy: str
) -> None:
    flag = tmp_path / "once"
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "ok", **sh("true")},
            {"id": "flaky", **sh(f"[ -e {flag} ] || {{ touch {flag}; exit 1; }}"), "retries": 1},
            {"id": "bad", **sh("exit 1")},
            {"id": "after-bad", **sh("true"), "depends_on": ["bad"]},
        ],
        policy=policy,
    )
    run = await harness.run(fleet)
    report = run.result.report
    assert report.states == {"succeeded": 2, "failed": 1, "blocked": 1}
    assert report.attempts == 4
    assert report.retries == 1
    assert report.completion_rate == 0.5
    assert report.mean_recovery is not None and report.mean_recovery > 0
    assert 0 < report.lower_bound <= report.makespan
    summary = {row.task: (row.state, row.attempts) for row in run.result.tasks}
    assert summary == {
        "ok": ("succeeded", 1),
        "flaky": ("succeeded", 2),
        "bad": ("failed", 1),
        "after-bad": ("blocked", 0),
    }


async def test_priority_follows_durations_learned_in_earlier_runs(tmp_path: Path) -> None:
    """Run 1 knows nothing and keeps config order; run 2 starts the slow task first."""
    from fleetdeck.executors import build_executors
    from fleetdeck.journal import Journal

    fleet = make_fleet(
        tmp_path,
        [
            {"id": "quick-1", **sh("sleep 0.05")},
            {"id": "slow", **sh("sleep 0.4")},
            {"id": "quick-2", **sh("sleep 0.05")},
        ],
        agents={"sh": {"command": ["sh", "-c", "{prompt}"], "slots": 1}},
    )
    orders = []
    for _ in range(2):
        journal = Journal(tmp_path / "state")
        engine = Engine(fleet, journal=journal, executors=build_executors(fleet))
        started: list[str] = []

        def note(event: Event, started: list[str] = started) -> None:
            if event.kind is EventKind.ATTEMPT_STARTED and event.task:
                started.append(event.task)

        engine.subscribe(note)
        await engine.run()
        journal.close()
        orders.append(started)
    assert orders[0] == ["quick-1", "slow", "quick-2"]  # no history: config order
    # The quick ones took about the same time, so only the slow one's place is sure.
    assert orders[1][0] == "slow"
    assert sorted(orders[1][1:]) == ["quick-1", "quick-2"]
