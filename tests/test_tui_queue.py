"""The queue's rows: what the filter shows, in what order, as tasks change."""

from __future__ import annotations

from dataclasses import replace

from fleetdeck.model import TaskState
from fleetdeck.snapshot import TaskView
from fleetdeck.tui.queue import QueueRows


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
