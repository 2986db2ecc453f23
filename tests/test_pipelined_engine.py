"""The pipelined policy with real processes: a dependent started on its
upstream's agent output is preempted (its whole process tree stopped) when the
upstream's CI fails, and starts again on the fixed upstream; a run stopped in
the middle of a speculative stack is taken up with the stack intact; and the
simulator counts the same compound failures as a real run."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from conftest import PYTHON, EngineHarness, alive, make_fleet, read_pids
from fleetdeck.engine import Engine
from fleetdeck.engine.shell import estimated_durations
from fleetdeck.engine.simulate import StageModel, simulate_run
from fleetdeck.journal import Journal
from fleetdeck.model import Event, EventKind, Outcome, Stage
from fleetdeck.report import load_run
from test_resume import run_once

# The upstream's CI: waits until `ready` exists (its dependent is surely
# running), then fails the first time (leaving `failed`) and passes after.
_CI = (
    "until [ -e {ready} ]; do sleep 0.02; done; "
    "[ -e {failed} ] || {{{{ touch {failed}; exit 1; }}}}"
)


async def test_an_upstream_ci_failure_stops_the_dependents_tree_and_it_runs_again_on_the_fix(
    harness: EngineHarness, tmp_path: Path, tree_agent: Path
) -> None:
    pidfile = tmp_path / "pids"
    ready = Path(f"{pidfile}.ready")
    once = tmp_path / "b-ran"
    b_agent = (
        f'if [ -e {once} ]; then cat "$FLEETDECK_INPUTS" > "$FLEETDECK_OUTPUT"; '
        f"else touch {once}; exec {PYTHON} {tree_agent} {pidfile}; fi"
    )
    fleet = make_fleet(
        tmp_path,
        [
            {
                "id": "a",
                "agent": "sh",
                "prompt": 'echo "a-$FLEETDECK_ATTEMPT" > "$FLEETDECK_OUTPUT"',
                "ci": "ci",
                "retries": 1,
            },
            {"id": "b", "agent": "sh", "prompt": b_agent, "depends_on": ["a"]},
            {"id": "c", "agent": "sh", "prompt": "true", "depends_on": ["b"]},
        ],
        runners={
            "ci": {"command": ["sh", "-c", _CI.format(ready=ready, failed=tmp_path / "ci-failed")]}
        },
        policy="pipelined",
        grace_period=0.3,
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 0, run.events
    assert {task: run.state(task) for task in "abc"} == dict.fromkeys("abc", "succeeded")
    # b's first attempt, a tree of four processes, was preempted: all of them are gone.
    pids = read_pids(pidfile)
    assert len(pids) == 4
    assert [pid for pid in pids if alive(pid)] == [], "preemption left processes behind"
    finished = run.of(EventKind.ATTEMPT_FINISHED, "b")
    assert [e.data["outcome"] for e in finished] == [Outcome.PREEMPTED, Outcome.OK]
    # Preempted before a's CI result was told as a failure retry, never charged to b.
    assert run.of(EventKind.RETRY_SCHEDULED, "b") == []
    (requeued,) = run.of(EventKind.TASK_REQUEUED, "b", cause="preempted")
    assert "'a' failed in ci" in requeued.data["reason"]
    # b started again on a's fixed output (its second attempt's), not the first.
    inputs = json.loads(Path(run.engine.task("b").output_path or "").read_text())
    assert inputs == {"a": "a-2\n"}
    # b started before a's CI passed, both times (speculation, not waiting).
    b_starts = [run.events.index(e) for e in run.of(EventKind.ATTEMPT_STARTED, "b")]
    a_done = run.index(EventKind.TASK_SUCCEEDED, "a")
    assert b_starts[0] < a_done and len(b_starts) == 2
    report = load_run(run.state_dir).report
    assert report.compound_failures == 1
    assert report.preempted_attempts == 1
    assert report.rework_agent > 0


async def test_a_run_stopped_in_a_speculative_stack_is_taken_up_with_it(tmp_path: Path) -> None:
    """x holds the only runner; a waits for it, b runs on a's agent output. The
    run stops there. Taken up, a's CI fails for good: b, which ran on a's output,
    must not stand (blocked), as it would not in a run that never stopped."""
    state = tmp_path / "state"
    go = tmp_path / "go"
    marks = tmp_path / "marks"
    marks.mkdir()
    ci = (
        f"until [ -e {go} ]; do sleep 0.02; done; "
        '[ "$FLEETDECK_TASK" != a ]'  # a's CI fails, x's passes
    )
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "x", "agent": "sh", "prompt": "true", "ci": "ci"},
            {"id": "a", "agent": "sh", "prompt": "sleep 0.3", "ci": "ci"},
            {
                "id": "b",
                "agent": "sh",
                "prompt": f"echo run >> {marks}/b; until [ -e {go} ]; do sleep 0.02; done",
                "depends_on": ["a"],
            },
        ],
        runners={"ci": {"command": ["sh", "-c", ci], "slots": 1}},
        policy="pipelined",
        grace_period=0.3,
    )
    journal = Journal(state)
    engine = Engine(fleet, journal=journal, executors=_executors(fleet))

    def stop_once_b_runs(event: Event) -> None:
        if event.kind is EventKind.ATTEMPT_STARTED and event.task == "b":
            asyncio.get_running_loop().call_later(0.3, engine.request_stop)

    engine.subscribe(stop_once_b_runs)
    first = await engine.run()
    journal.close()
    assert first.exit_code == 130
    replay = load_run(state)
    assert replay.tasks and {t.task: str(t.state) for t in replay.tasks}["a"] == "ci_queued"
    go.write_text("")
    second, events, engine = await run_once(fleet, state, resume=True)
    states = {task: str(engine.task(task).state) for task in "xab"}
    assert states == {"x": "succeeded", "a": "failed", "b": "blocked"}
    assert second.exit_code == 1
    requeued = [
        e
        for e in events
        if e.kind is EventKind.TASK_REQUEUED and e.data.get("cause") == "preempted"
    ]
    assert [e.task for e in requeued] == ["b"]


def _executors(fleet: object) -> object:
    from fleetdeck.executors import build_executors

    return build_executors(fleet)  # type: ignore[arg-type]


async def test_the_simulator_and_a_real_run_count_the_same_compound_failures(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """a's CI always fails (after 0.8 s); b (agent 0.1 s, CI 3 s) and c (agent 3 s)
    have started on it by then: two compound failures, in both."""
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "a", "agent": "sh", "prompt": "true", "ci": "fail"},
            {"id": "b", "agent": "sh", "prompt": "sleep 0.1", "ci": "slow", "depends_on": ["a"]},
            {"id": "c", "agent": "sh", "prompt": "sleep 3", "depends_on": ["b"]},
        ],
        runners={
            "fail": {"command": ["sh", "-c", "sleep 0.8; exit 1"], "slots": 1},
            "slow": {"command": ["sh", "-c", "sleep 3"], "slots": 1},
        },
        policy="pipelined",
        grace_period=0.2,
    )
    run = await harness.run(fleet)
    real = load_run(run.state_dir).report
    assert {task: run.state(task) for task in "abc"} == {
        "a": "failed",
        "b": "blocked",
        "c": "blocked",
    }
    models = [
        {Stage.AGENT: StageModel.fixed(0.0), Stage.CI: StageModel.fixed(0.8, 1.0)},
        {Stage.AGENT: StageModel.fixed(0.1), Stage.CI: StageModel.fixed(3.0)},
        {Stage.AGENT: StageModel.fixed(3.0)},
    ]
    simulated = simulate_run(
        fleet,
        "pipelined",
        models,
        estimates=estimated_durations(fleet, {}),
        rng=random.Random(1),
    ).report
    assert real.compound_failures == simulated.compound_failures == 2
    assert real.preempted_attempts == simulated.preempted_attempts == 2
    # The work thrown away: b's agent (0.1 s) and b's CI and c's agent from 0.1 s
    # until they stopped, 0.8 s and the grace period the simulator allows a stop
    # (0.2 s): 1.9 s. A real run throws away the same kinds of work (its
    # seconds are the machine's: timings belong in benchmarks, not here).
    assert simulated.rework == pytest.approx(1.9)
    assert simulated.rework_agent > 0 and simulated.rework_ci > 0
    assert real.rework_agent > 0 and real.rework_ci > 0


async def test_an_adaptive_run_taken_up_goes_on_with_its_window(tmp_path: Path) -> None:
    """Three successes grow the window from 2 to 5; the run stops; taken up, the
    window is 5 again, not the configured 2."""
    state = tmp_path / "state"
    go = tmp_path / "go"
    wait = f"until [ -e {go} ]; do sleep 0.02; done"
    tasks = [{"id": f"quick{i}", "agent": "sh", "prompt": "true"} for i in range(3)]
    tasks += [{"id": f"slow{i}", "agent": "sh", "prompt": wait} for i in range(3)]
    fleet = make_fleet(tmp_path, tasks, policy="adaptive", grace_period=0.2)
    journal = Journal(state)
    engine = Engine(fleet, journal=journal, executors=_executors(fleet))
    windows: list[int] = []

    def stop_at_five(event: Event) -> None:
        if event.kind is EventKind.WINDOW_CHANGED:
            windows.append(event.data["window"])
            if event.data["window"] == 5:
                asyncio.get_running_loop().call_later(0.2, engine.request_stop)

    engine.subscribe(stop_at_five)
    first = await engine.run()
    journal.close()
    assert first.exit_code == 130
    assert windows == [3, 4, 5]
    go.write_text("")
    second, events, engine = await run_once(fleet, state, resume=True)
    assert second.exit_code == 0
    assert engine.snapshot().policy_detail.startswith("adaptive ")
    grown = [e.data for e in events if e.kind is EventKind.WINDOW_CHANGED]
    # Taken up at 5: the three slow tasks' successes take it to 6, 7, 8.
    assert [data["previous"] for data in grown][:1] == [5]
