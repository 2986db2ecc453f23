"""Running a fleet again after a finished run: a new run that reuses what still holds.

The fleet: a chain a -> b -> c (c also reads a's output) and an independent d.
b fails until a flag file exists; a test "fixes" it by creating the file (the
config does not change), or by editing its prompt.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from conftest import make_fleet
from fleetdeck.config import Fleet
from fleetdeck.journal import RunRecord
from fleetdeck.metrics import ReportBuilder
from fleetdeck.model import Event, EventKind, TaskState
from fleetdeck.report import load_run
from fleetdeck.resume import carries_over, choose_run
from test_cli_run import fleetdeck, write_config
from test_resume import counting, run_once, runs


def fleet_of(
    tmp_path: Path, marks: Path, *, a_extra: str = "", b_extra: str = "", c_extra: str = ""
) -> Fleet:
    flag = tmp_path / "fixed"
    return make_fleet(
        tmp_path,
        [
            counting("a", marks, f"true {a_extra}".strip()),
            {
                **counting("b", marks, f"test -e {flag} {b_extra}".strip()),
                "depends_on": ["a"],
                "retries": 0,
            },
            {**counting("c", marks, f"true {c_extra}".strip()), "depends_on": ["a", "b"]},
            counting("d", marks),
        ],
        grace_period=0.2,
    )


def counts(marks: Path) -> tuple[int, ...]:
    return tuple(runs(marks, task) for task in "abcd")


def of(events: list[Event], kind: EventKind) -> list[Event]:
    return [event for event in events if event.kind is kind]


async def test_after_a_failure_only_the_failed_task_and_what_it_blocked_run_again(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    first, _, engine = await run_once(fleet_of(tmp_path, marks), state, resume=True)
    assert first.exit_code == 1
    assert engine.task("b").state is TaskState.FAILED
    assert engine.task("c").state is TaskState.BLOCKED
    assert counts(marks) == (1, 1, 0, 1)

    (tmp_path / "fixed").write_text("")  # fixed outside the config: b is unchanged
    second, events, engine = await run_once(fleet_of(tmp_path, marks), state, resume=True)
    assert second.exit_code == 0
    assert second.run_id == 2
    # a and d did not run again; b did, and c, which it had blocked, ran at last.
    assert counts(marks) == (1, 2, 1, 1)
    assert all(task.state is TaskState.SUCCEEDED for task in engine.tasks())
    # Outputs written in run 1 reach the dependents in run 2.
    assert json.loads((marks / "b.inputs").read_text()) == {"a": "out-a\n"}
    assert json.loads((marks / "c.inputs").read_text()) == {"a": "out-a\n", "b": "out-b\n"}
    assert engine.task("a").output_path == str(state / "runs" / "1" / "a.1.agent.out")
    assert engine.task("b").output_path == str(state / "runs" / "2" / "b.1.agent.out")

    started = events[0]
    assert started.kind is EventKind.RUN_STARTED
    assert started.data["previous_run"] == 1
    assert started.data["reused"] == 2
    assert "reason" not in started.data  # something did run again
    reused = of(events, EventKind.TASK_REUSED)
    assert [(e.task, e.data["reused_from"], e.data["attempt"]) for e in reused] == [
        ("a", 1, 1),
        ("d", 1, 1),
    ]
    assert {e.task for e in of(events, EventKind.ATTEMPT_STARTED)} == {"b", "c"}
    # Reused tasks are journaled before anything is ready or runs.
    assert events.index(reused[-1]) < events.index(of(events, EventKind.TASK_READY)[0])

    # The report is run 2's: its clock starts at run 2's start, and the reused
    # tasks count as reused, not as work done.
    report = second.report
    assert report.reused == 2
    assert report.states == {"succeeded": 4}
    assert report.attempts == 2
    finished = of(events, EventKind.RUN_FINISHED)[0]
    assert report.makespan == finished.ts - started.ts
    assert [t.task for t in second.tasks if t.reused] == ["a", "d"]
    replay = load_run(state)
    assert replay.run.run_id == 2
    assert replay.report.reused == 2
    assert replay.report.makespan == report.makespan

    db = sqlite3.connect(state / "journal.sqlite3")
    assert db.execute("SELECT run_id, status, exit_code FROM runs").fetchall() == [
        (1, "finished", 1),
        (2, "finished", 0),
    ]


async def test_after_a_full_success_nothing_runs_and_reuse_goes_back_to_the_run_that_ran_it(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    first, _, _ = await run_once(fleet_of(tmp_path, marks), state, resume=True)
    assert first.exit_code == 1
    (tmp_path / "fixed").write_text("")
    second, _, _ = await run_once(fleet_of(tmp_path, marks), state, resume=True)
    assert second.exit_code == 0

    third, events, engine = await run_once(fleet_of(tmp_path, marks), state, resume=True)
    assert third.exit_code == 0
    assert third.run_id == 3
    assert counts(marks) == (1, 2, 1, 1)  # nothing ran
    assert events[0].data["reason"] == "nothing changed since run 2"
    assert events[0].data["reused"] == 4
    # Each names the run whose attempt produced it, and its output is still found there.
    reused = {e.task: e.data["reused_from"] for e in of(events, EventKind.TASK_REUSED)}
    assert reused == {"a": 1, "b": 2, "c": 2, "d": 1}
    assert engine.task("a").output_path == str(state / "runs" / "1" / "a.1.agent.out")
    assert engine.task("c").output_path == str(state / "runs" / "2" / "c.1.agent.out")
    assert third.report.reused == 4
    assert third.report.attempts == 0
    assert third.report.efficiency is None  # no work done: nothing to be efficient at
    assert third.report.throughput_per_hour == 0.0

    # c changes: only c runs, and its inputs come from runs 1 and 2.
    fourth, events, _ = await run_once(
        fleet_of(tmp_path, marks, c_extra="changed"), state, resume=True
    )
    assert fourth.exit_code == 0
    assert counts(marks) == (1, 2, 2, 1)
    assert events[0].data["changed"] == ["c"]
    assert json.loads((marks / "c.inputs").read_text()) == {"a": "out-a\n", "b": "out-b\n"}


async def test_a_changed_success_runs_again_with_everything_downstream(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    (tmp_path / "fixed").write_text("")
    first, _, _ = await run_once(fleet_of(tmp_path, marks), state, resume=True)
    assert first.exit_code == 0
    second, events, _ = await run_once(
        fleet_of(tmp_path, marks, a_extra="changed"), state, resume=True
    )
    assert second.exit_code == 0
    # a changed: a, b and c below it run again; d, independent, is reused.
    assert counts(marks) == (2, 2, 2, 1)
    assert events[0].data["changed"] == ["a"]
    assert events[0].data["rerun"] == ["b", "c"]
    assert [e.task for e in of(events, EventKind.TASK_REUSED)] == ["d"]


async def test_a_failed_task_fixed_by_editing_its_prompt_runs_again(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    first, _, _ = await run_once(fleet_of(tmp_path, marks), state, resume=True)
    assert first.exit_code == 1
    fixed = fleet_of(tmp_path, marks, b_extra="|| true  # fixed")
    second, events, _ = await run_once(fixed, state, resume=True)
    assert second.exit_code == 0
    assert counts(marks) == (1, 2, 1, 1)
    assert events[0].data["changed"] == ["b"]
    assert [e.task for e in of(events, EventKind.TASK_REUSED)] == ["a", "d"]


async def test_fresh_runs_everything_again(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    (tmp_path / "fixed").write_text("")
    first, _, _ = await run_once(fleet_of(tmp_path, marks), state, resume=True)
    assert first.exit_code == 0
    # resume=False is what `--fresh` does: no run is chosen to take up or reuse.
    second, events, _ = await run_once(fleet_of(tmp_path, marks), state, resume=False)
    assert second.exit_code == 0
    assert counts(marks) == (2, 2, 2, 2)
    assert not of(events, EventKind.TASK_REUSED)
    assert "previous_run" not in events[0].data


async def test_an_interrupted_run_that_reused_tasks_resumes_and_keeps_them(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    first, _, _ = await run_once(fleet_of(tmp_path, marks), state, resume=True)
    assert first.exit_code == 1
    # b now hangs: run 2 (reusing a and d) is interrupted while b runs.
    slow = fleet_of(tmp_path, marks, b_extra="|| sleep 30")
    second, _, _ = await run_once(slow, state, resume=True, stop_on="b")
    assert second.exit_code == 130
    assert second.run_id == 2
    assert counts(marks) == (1, 2, 0, 1)

    (tmp_path / "fixed").write_text("")
    third, events, engine = await run_once(slow, state, resume=True)
    assert third.exit_code == 0
    assert third.run_id == 2  # taken up again, not a new run
    assert events[0].kind is EventKind.RUN_RESUMED
    assert events[0].data["done"] == 2
    assert counts(marks) == (1, 3, 1, 1)
    # a, reused from run 1 by run 2, still gives c its output from run 1.
    assert json.loads((marks / "c.inputs").read_text()) == {"a": "out-a\n", "b": "out-b\n"}
    assert engine.task("a").output_path == str(state / "runs" / "1" / "a.1.agent.out")
    assert third.report.reused == 2


def record(run_id: int, fleet: str, status: str) -> RunRecord:
    return RunRecord(run_id, fleet, "f.toml", "{}", "wave", 0.0, None, status, None)


def test_choose_run_carries_over_only_a_finished_run_of_the_same_fleet() -> None:
    finished = record(4, "mine", "finished")
    assert choose_run(finished, "mine", "state") is finished
    assert carries_over(finished)
    assert choose_run(record(4, "theirs", "finished"), "mine", "state") is None
    interrupted = record(4, "mine", "interrupted")
    assert choose_run(interrupted, "mine", "state") is interrupted
    assert not carries_over(interrupted)


def test_report_builder_counts_reused_tasks_apart(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, [{"id": "x", "agent": "sh", "prompt": "true"}])
    builder = ReportBuilder(fleet)
    builder.feed(Event(100.0, EventKind.RUN_STARTED))
    builder.feed(Event(100.0, EventKind.TASK_REUSED, "x", {"reused_from": 1, "attempt": 1}))
    builder.feed(Event(100.5, EventKind.RUN_FINISHED))
    report = builder.report()
    assert (report.reused, report.states, report.completion_rate) == (1, {"succeeded": 1}, 1.0)
    assert report.makespan == 0.5
    assert report.mean_time_to_complete is None
    (summary,) = builder.summaries()
    assert summary.reused and summary.duration is None
    # Put back (its definition changed on a resume): no longer reused.
    builder.feed(Event(101.0, EventKind.TASK_REQUEUED, "x", {"state": "pending"}))
    assert builder.report().reused == 0


def test_cli_says_what_it_reuses_and_fresh_runs_all(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    body = f"""
[[tasks]]
id = "one"
prompt = "echo one >> {marks}"
agent = "sh"
"""
    config = write_config(tmp_path, body)
    first = fleetdeck("run", str(config), "--no-tui")
    assert first.returncode == 0, first.stderr
    second = fleetdeck("run", str(config), "--no-tui")
    assert second.returncode == 0, second.stderr
    assert "run 1 in " in second.stderr
    assert "finished; starting a new run that reuses" in second.stderr
    lines = second.stdout.splitlines()
    (reused,) = [line for line in lines if " task_reused " in line]
    assert reused.split()[1:] == ["one", "task_reused", "reused_from=1", "attempt=1"]
    (started,) = [line for line in lines if " run_started " in line]
    assert 'reason="nothing changed since run 1"' in started
    (row,) = [line for line in lines if line.startswith("one ")]
    assert row.split() == ["one", "succeeded", "0", "reused", "-"]
    assert "1 succeeded (1 reused from an earlier run)" in second.stdout
    report = fleetdeck("report", str(tmp_path / "state"))
    assert "1 succeeded (1 reused from an earlier run)" in report.stdout
    third = fleetdeck("run", str(config), "--no-tui", "--fresh")
    assert third.returncode == 0
    assert marks.read_text() == "one\n" * 2
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    assert [row[0] for row in db.execute("SELECT run_id FROM runs")] == [1, 2, 3]


async def test_the_tui_counts_reused_tasks_done_and_details_show_their_output(
    tmp_path: Path,
) -> None:
    from fleetdeck.engine import Engine
    from fleetdeck.executors import build_executors
    from fleetdeck.journal import Journal
    from fleetdeck.tui.queue import QueuePane
    from tui_support import app_over, until

    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    first, _, _ = await run_once(fleet_of(tmp_path, marks), state, resume=True)
    assert first.exit_code == 1
    # b hangs until the flag exists: the screen is looked at while it runs.
    fleet = fleet_of(
        tmp_path, marks, b_extra=f"|| (while [ ! -e {tmp_path}/fixed ]; do sleep 0.05; done)"
    )
    journal = Journal(state)
    previous = choose_run(journal.latest_run(), fleet.name, str(state))
    engine = Engine(fleet, journal=journal, executors=build_executors(fleet), resume=previous)
    app = app_over(engine)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(lambda: engine.task("b").state is TaskState.RUNNING)
            await pilot.pause(0.3)
            snapshot = engine.snapshot()
            assert snapshot.done == 2
            assert {t.id: t.state for t in snapshot.tasks}["a"] is TaskState.SUCCEEDED
            # The queue lists what is not done: b and c, not the reused a and d.
            assert app.query_one(QueuePane).border_title == "Queue · 2 not done"
            assert engine.task_detail("a").output == "out-a\n"
            assert engine.task_detail("b").inputs == {"a": "out-a\n"}
            (tmp_path / "fixed").write_text("")
            await until(lambda: engine.task("c").state is TaskState.SUCCEEDED)
    finally:
        journal.close()
    assert counts(marks) == (1, 2, 1, 1)
