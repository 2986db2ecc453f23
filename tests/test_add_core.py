"""Tasks added to a running fleet, in the pure core (virtual time, no processes):
validated like the config, ready at once when their dependencies are done,
blocked under a failure, waiting on what runs; every per-task structure grows."""

from __future__ import annotations

import pytest

from core_support import CoreSim, fleet_toml
from fleetdeck.addition import appended
from fleetdeck.engine import commands
from fleetdeck.engine.core import CommandError
from fleetdeck.engine.views import ViewBuilder
from fleetdeck.fold import next_state
from fleetdeck.metrics import ContentionHistory, ReportBuilder
from fleetdeck.model import EventKind, TaskState
from fleetdeck.redact import Redactor


def _sim(policy: str | None = None) -> CoreSim:
    sim = CoreSim(
        fleet_toml(
            [
                {"id": "done"},
                {"id": "runs"},
                {"id": "breaks"},
                {"id": "after", "depends_on": ["breaks"]},
            ],
            slots=3,
        ),
        policy=policy,
    )
    sim.start()
    sim.end("done")
    sim.begin("runs")
    sim.end("breaks", exit_code=1)  # no retries: failed, `after` blocked
    sim.take_events()
    sim.launched()
    return sim


def test_added_tasks_are_ready_waiting_or_blocked_as_their_dependencies_are() -> None:
    sim = _sim()
    ids = commands.add(
        sim.core,
        [
            {"id": "new", "agent": "coder", "prompt": "p"},
            {"id": "on-done", "agent": "coder", "depends_on": ["done"]},
            {"id": "on-runs", "agent": "coder", "depends_on": ["runs"]},
            {"id": "on-failed", "agent": "coder", "depends_on": ["breaks"]},
            # Depends on an added task, listed after it: placed in topological order.
            {"id": "on-added", "agent": "coder", "depends_on": ["on-late"]},
            {"id": "on-late", "agent": "coder", "depends_on": ["after"]},
        ],
    )
    assert ids == ["new", "on-done", "on-runs", "on-failed", "on-added", "on-late"]
    events = sim.take_events()
    added = [e for e in events if e.kind is EventKind.TASK_ADDED]
    assert [e.task for e in added] == ids
    assert added[0].data == {"spec": {"id": "new", "agent": "coder", "prompt": "p"}}
    assert [
        (str(e.kind), e.task, e.data) for e in events if e.kind is not EventKind.TASK_ADDED
    ] == [
        ("task_ready", "new", {"wave": 0}),
        ("task_ready", "on-done", {"wave": 1}),
        ("task_blocked", "on-failed", {"blocked_by": "breaks"}),
        ("task_blocked", "on-late", {"blocked_by": "breaks"}),
        ("task_blocked", "on-added", {"blocked_by": "breaks"}),
    ]
    assert sim.state("on-runs") is TaskState.PENDING
    core = sim.core
    # Blocked directly by a failure: the operator is asked; through another blocked task: not.
    assert core.needs_attention(core.node("on-failed"))
    assert not core.needs_attention(core.node("on-added"))
    sim.settle()
    # Two ready, two slots free (`runs` holds the third): both launched.
    assert sorted(sim.launched()) == [("new", "agent"), ("on-done", "agent")]
    # It waited for the task it depends on, and starts once that succeeded.
    sim.end("runs")
    assert sim.launched() == [("on-runs", "agent")]
    sim.end("new")
    sim.end("on-done")
    sim.end("on-runs")
    # The failed dependency retried: what it blocked runs once it succeeds.
    commands.retry(core, "breaks")
    sim.settle()
    sim.end("breaks")
    sim.end("after")
    sim.end("on-failed")
    sim.end("on-late")
    sim.end("on-added")
    assert core.settled
    assert set(sim.states().values()) == {"succeeded"}


def test_views_report_and_folding_grow_with_the_added_tasks() -> None:
    sim = _sim()
    core = sim.core
    views = ViewBuilder(
        core, redactor=Redactor([]), hosts={}, history=ContentionHistory(), usage=dict
    )
    report = ReportBuilder(sim.fleet, grown=lambda: core.fleet)
    for event in sim.fx.events:
        report.feed(event)
    before = views.snapshot(
        now=0.0, started_at=0.0, finished_at=None, exit_code=None, stopping=False
    )
    assert before.total == 4
    commands.add(core, [{"id": "more", "agent": "coder", "depends_on": ["done"]}])
    sim.settle()
    for event in sim.take_events():
        report.feed(event)
    after = views.snapshot(
        now=1.0, started_at=0.0, finished_at=None, exit_code=None, stopping=False
    )
    assert after.total == 5 and after.tasks[-1].id == "more"
    assert after.tasks[-1].wave == 1 and after.tasks[-1].state is TaskState.RUNNING
    assert [s.task for s in report.summaries()][-1] == "more"
    sim.end("more")
    for event in sim.take_events():
        report.feed(event)
    assert report.summaries()[-1].state is TaskState.SUCCEEDED
    assert report.report().states["succeeded"] == 2
    # Read back without the live core (`fleetdeck report`): the event grows it too.
    offline = ReportBuilder(sim.fleet)
    folded: dict[str, TaskState] = {}
    for event in sim.fx.events:
        offline.feed(event)
        if event.task is not None:
            folded[event.task] = next_state(folded.get(event.task, TaskState.PENDING), event)
    assert [(s.task, s.state) for s in offline.summaries()] == [
        (s.task, s.state) for s in report.summaries()
    ]
    assert folded == {task.id: task.state for task in core.tasks}
    # The critical path, the levels and the pipelines grew as well.
    assert len(core.critical) == len(core.pipelines) == len(core.waiting_on) == 5
    # And the journal's tables rebuild the same fleet.
    added = [e.data["spec"] for e in sim.fx.events if e.kind is EventKind.TASK_ADDED]
    rebuilt, skipped = appended(sim.fleet, added)
    assert rebuilt.tasks == core.fleet.tasks and skipped == []


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"id": "x", "agent": "codr"},
            "add: tasks[1].agent: unknown agent 'codr' (did you mean 'coder'?); "
            "defined agents: coder",
        ),
        (
            {"id": "x", "agent": "coder", "depends_on": ["donne"]},
            "add: tasks[1].depends_on: task 'x' depends on unknown task 'donne' "
            "(did you mean 'done'?)",
        ),
        (
            {"id": "runs", "agent": "coder"},
            "add: tasks[1].id: duplicate task id 'runs' (first used by tasks[1])",
        ),
        ({"id": "x", "agent": "coder", "retries": -1}, "add: tasks[1].retries:"),
        ({"id": "x", "agent": "coder", "colour": "red"}, "add: tasks[1]: unknown key 'colour'"),
    ],
)
def test_a_bad_task_is_refused_with_the_configs_message_and_nothing_changes(
    table: dict[str, object], message: str
) -> None:
    sim = _sim()
    core = sim.core
    before = (sim.states(), core.fleet, len(core.pipelines), core.unfinished)
    with pytest.raises(CommandError) as refused:
        commands.add(core, [{"id": "fine", "agent": "coder"}, table])
    # The added task's own index in what was sent (the first one was fine).
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)
    assert (sim.states(), core.fleet, len(core.pipelines), core.unfinished) == before
    assert sim.take_events() == []


def test_a_cycle_among_added_tasks_is_refused() -> None:
    sim = _sim()
    with pytest.raises(CommandError, match=r"dependency cycle: a -> b -> a"):
        commands.add(
            sim.core,
            [
                {"id": "a", "agent": "coder", "depends_on": ["b"]},
                {"id": "b", "agent": "coder", "depends_on": ["a"]},
            ],
        )
    assert len(sim.core.tasks) == 4


def test_under_pipelined_a_released_dependency_is_not_waited_for() -> None:
    sim = CoreSim(fleet_toml([{"id": "up", "ci": "ci"}], slots=2), policy="pipelined")
    sim.start()
    sim.end("up")  # agent done: released, CI queued
    assert sim.core.released == {0}
    commands.add(sim.core, [{"id": "down", "agent": "coder", "depends_on": ["up"]}])
    sim.settle()
    assert ("down", "agent") in sim.launched()


def test_a_resumed_fleet_keeps_the_configs_own_definition_of_an_added_id() -> None:
    sim = _sim()
    added = [
        {"id": "runs", "agent": "coder", "prompt": "the added one"},  # the config has it now
        {"id": "gone", "agent": "retired"},  # its agent left the config
        {"id": "kept", "agent": "coder", "depends_on": ["done"]},
    ]
    fleet, skipped = appended(sim.fleet, added)
    assert skipped == ["runs", "gone"]
    assert [task.id for task in fleet.tasks] == ["done", "runs", "breaks", "after", "kept"]
    assert fleet.tasks[1] == sim.fleet.tasks[1]
