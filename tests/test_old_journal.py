"""Journals written by fleetdeck 0.1.0 stay readable.

`tests/data/journal-0.1.0` holds a state directory made by that release (the
tree before the engine became a core and a shell): a fleet of four tasks with a
CI runner, a task that failed, was retried by the operator and failed again,
and the task it blocked. That release said "operator retry" in words only; the
typed `cause` came later.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fleetdeck.cli import main
from fleetdeck.config import load_fleet
from fleetdeck.fold import next_state
from fleetdeck.journal import Journal
from fleetdeck.model import TaskState
from fleetdeck.resume import replay, throttles

OLD = Path(__file__).parent / "data" / "journal-0.1.0"


@pytest.fixture
def old_state(tmp_path: Path) -> Path:
    """A copy of the old state dir (reading a journal may create its -wal file)."""
    copy = tmp_path / "old"
    shutil.copytree(OLD, copy)
    return copy


def test_report_reads_a_journal_of_the_last_release(
    old_state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(old_state / "state")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task "))
    table = lines[header + 1 : lines.index("", header)]
    rows = {line.split()[0]: line.split()[1:3] for line in table}
    assert rows["schema"] == ["succeeded", "1"]
    assert rows["flaky"] == ["failed", "4"]
    assert rows["docs"] == ["blocked", "0"]
    assert "completion rate   50%" in out


def test_the_fold_reads_its_events_and_its_operator_retry(old_state: Path) -> None:
    journal = Journal(old_state / "state")
    try:
        run = journal.latest_run()
        assert run is not None
        events = journal.events(run.run_id)
        rows = journal.attempts(run.run_id)
    finally:
        journal.close()
    tasks = replay(events, rows, str(old_state / "state" / "runs" / "1"))
    assert {task: t.state for task, t in tasks.items()} == {
        "schema": TaskState.SUCCEEDED,
        "api": TaskState.SUCCEEDED,
        "flaky": TaskState.FAILED,
        "docs": TaskState.BLOCKED,
    }
    # The operator's retry (known by its words in this journal) gave a fresh
    # budget: one failure since, not three.
    assert tasks["flaky"].failures == 1
    # Written before fallbacks and throttles were journaled: no task was
    # rerouted, no agent is paused.
    assert all(t.agent is None and not t.left_agents for t in tasks.values())
    assert throttles(events) == {}
    assert len(tasks["flaky"].attempts) == 4
    # Every event the old release wrote is one the fold knows how to read.
    state = TaskState.PENDING
    for event in events:
        if event.task == "flaky":
            state = next_state(state, event)
    assert state is TaskState.FAILED


def test_an_old_fleet_runs_again_in_the_old_state_dir(old_state: Path) -> None:
    # A finished run is not resumed: the next run starts (and ends) beside it.
    fleet = load_fleet(old_state / "fleet.toml")
    assert fleet.name == "legacy"
    assert main(["run", str(old_state / "fleet.toml"), "--no-tui"]) == 1
    journal = Journal(old_state / "state")
    try:
        assert [run.run_id for run in journal.runs()] == [1, 2]
    finally:
        journal.close()
