"""The queue's rows: what the filter shows, in what order, as tasks change."""

from __future__ import annotations

from dataclasses import replace

from fleetdeck.model import TaskState
from fleetdeck.snapshot import TaskView
from fleetdeck.tui.queue import STATE_WIDTH
from fleetdeck.tui.queue_rows import QueueRows, waits_for
from fleetdeck.tui.render import state_text


def view(
    task: str, wave: int, state: TaskState = TaskState.PENDING, agent: str = "Coder"
) -> TaskView:
    return TaskView(
        id=task,
        state=state,
        wave=wave,
        agent=agent,
        runner=None,
        attempts=0,
        waiting_for=(),
        blocked_by=None,
        in_flight=False,
        started_at=None,
        finished_at=None,
        retry_at=None,
    )


def keys(rows: QueueRows) -> list[str]:
    return [rows.key(index) for index in range(len(rows))]


def queue() -> QueueRows:
    rows = QueueRows()
    rows.load(
        [
            view("Lint", 1),
            view("schema", 0, TaskState.RUNNING),
            view("docs", 1, TaskState.FAILED, agent="writer"),
            view("api", 0, TaskState.SUCCEEDED),
            view("lint-docs", 2, TaskState.READY),
        ]
    )
    return rows


def test_rows_are_by_wave_then_config_order_without_the_done_tasks() -> None:
    rows = queue()
    rows.refilter("")
    assert keys(rows) == ["wave:0", "schema", "wave:1", "Lint", "docs", "wave:2", "lint-docs"]


def test_the_filter_matches_the_id_state_or_agent_whatever_the_case() -> None:
    rows = queue()
    rows.refilter("lint")  # the pane lowercases what is typed
    assert keys(rows) == ["wave:1", "Lint", "wave:2", "lint-docs"]
    rows.refilter("failed")
    assert keys(rows) == ["wave:1", "docs"]
    rows.refilter("coder")
    assert rows.task_count == 3
    rows.refilter("runn")
    assert keys(rows) == ["wave:0", "schema"]


def test_a_match_does_not_span_the_id_and_the_agent() -> None:
    rows = queue()
    rows.refilter("docswriter")
    assert rows.task_count == 0
    rows.refilter("s")  # but each alone matches
    assert set(keys(rows)) >= {"schema", "docs", "lint-docs"}


def test_a_changed_view_comes_and_goes_in_its_place_under_the_filter() -> None:
    rows = queue()
    rows.refilter("lint")
    came = rows.put(view("lint-docs", 2, TaskState.SUCCEEDED))
    assert came and keys(rows) == ["wave:1", "Lint"]
    rows.put(view("new-lint", 0))  # a task not seen before
    assert keys(rows) == ["wave:0", "new-lint", "wave:1", "Lint"]
    rows.put(replace(rows.views["Lint"], state=TaskState.RUNNING))  # stays: no change in rows
    assert keys(rows) == ["wave:0", "new-lint", "wave:1", "Lint"]
    assert rows.index_of("Lint") == 3


def test_the_done_tasks_show_on_demand_in_a_group_after_every_wave() -> None:
    rows = queue()
    rows.show_done = True
    rows.refilter("")
    assert keys(rows) == [
        "wave:0",
        "schema",
        "wave:1",
        "Lint",
        "docs",
        "wave:2",
        "lint-docs",
        "wave:done",
        "api",
    ]
    assert str(rows.row(rows.index_of("wave:done") or 0).cells[0]) == "done · 1"
    assert rows.index_of("api") == 8
    rows.refilter("succ")  # the filter looks at the done tasks too
    assert keys(rows) == ["wave:done", "api"]


def test_a_task_done_moves_to_the_done_group_in_config_order() -> None:
    rows = queue()
    rows.show_done = True
    rows.refilter("")
    moved = rows.put(replace(rows.views["schema"], state=TaskState.SUCCEEDED))
    assert moved
    assert keys(rows)[:2] == ["wave:1", "Lint"]  # wave 0 has nothing left
    assert keys(rows)[-3:] == ["wave:done", "schema", "api"]  # schema comes first in the config
    assert rows.index_of("schema") == len(rows) - 2
    assert rows.index_of("wave:0") is None
    # Retried (a dependency failed again...): back in its wave.
    assert rows.put(replace(rows.views["schema"], state=TaskState.READY))
    assert keys(rows)[:2] == ["wave:0", "schema"]
    assert keys(rows)[-2:] == ["wave:done", "api"]
    rows.show_done = False
    rows.refilter("")
    assert "wave:done" not in keys(rows) and "api" not in keys(rows)


def test_a_running_task_waits_for_nothing() -> None:
    running = view("schema", 0, TaskState.RUNNING)
    assert waits_for(running, now=0.0) == ""
    # Nor in CI (it read `ci on ci`): the in-flight pane says where it runs.
    in_ci = replace(running, state=TaskState.CI_RUNNING, runner="ci")
    assert waits_for(in_ci, now=0.0) == ""
    assert waits_for(replace(in_ci, state=TaskState.CI_QUEUED), now=0.0) == "runner ci"
    failed = replace(running, state=TaskState.FAILED)
    assert waits_for(failed, now=0.0) == "r retries"
    assert waits_for(failed, now=0.0, live=False) == ""  # the run has finished


def test_states_read_as_whole_words_within_the_column() -> None:
    for state in TaskState:
        assert len(state_text(state, short=True)) <= STATE_WIDTH
    assert str(state_text(TaskState.CANCELLED, short=True)) == "⊖ cancelled"


def test_a_ready_task_the_policy_holds_back_says_so_while_its_agent_has_free_slots() -> None:
    ready = view("lint-docs", 2, TaskState.READY, agent="coder")
    assert waits_for(ready, now=0.0) == "slot of coder"
    assert waits_for(ready, now=0.0, held_by="sequential") == "policy: sequential"
    # A retry needs a slot, never the policy's budget.
    retry = replace(ready, in_flight=True, attempts=1)
    assert waits_for(retry, now=0.0, held_by="sequential") == "slot of coder (retry)"
    rows = queue()
    rows.refilter("")
    rows.widths = (12, 30)
    rows.policy, rows.held_agents = "sequential", frozenset({"writer"})
    assert rows.row(rows.index_of("lint-docs") or 0).cells[3].plain == "slot of Coder"
    rows.held_agents = frozenset({"Coder"})
    assert rows.row(rows.index_of("lint-docs") or 0).cells[3].plain == "policy: sequential"
