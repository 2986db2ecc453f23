"""The report's figures from event streams: none that mislead (partial runs, runs
where nothing succeeded, policy switches)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import make_fleet
from fleetdeck.headless import format_report
from fleetdeck.metrics import Report, ReportBuilder
from fleetdeck.model import Event, EventKind

T0 = 1_800_000_000.0


def build(
    tmp_path: Path, events: list[tuple[float, EventKind, str | None, dict[str, Any]]]
) -> Report:
    fleet = make_fleet(
        tmp_path,
        [{"id": "a", "agent": "sh", "prompt": "p"}, {"id": "b", "agent": "sh", "prompt": "p"}],
    )
    builder = ReportBuilder(fleet)
    for at, kind, task, data in events:
        builder.feed(Event(T0 + at, kind, task, data))
    return builder.report()


def attempt(task: str, start: float, end: float, outcome: str) -> list[Any]:
    return [
        (start, EventKind.ATTEMPT_STARTED, task, {"stage": "agent", "attempt": 1}),
        (
            end,
            EventKind.ATTEMPT_FINISHED,
            task,
            {"stage": "agent", "attempt": 1, "outcome": outcome, "duration": end - start},
        ),
    ]


STARTED = (0.0, EventKind.RUN_STARTED, None, {"policy": "wave", "run_id": 1})


def test_an_interrupted_run_has_no_efficiency_nor_throughput(tmp_path: Path) -> None:
    # `a` succeeded quickly, `b` was stopped mid-attempt: 1 task in 2 s is no 1800/h fleet.
    report = build(
        tmp_path,
        [
            STARTED,
            *attempt("a", 0.0, 2.0, "ok"),
            (2.0, EventKind.TASK_SUCCEEDED, "a", {}),
            (0.0, EventKind.ATTEMPT_STARTED, "b", {"stage": "agent", "attempt": 1}),
            (2.0, EventKind.RUN_FINISHED, None, {"status": "interrupted"}),
        ],
    )
    assert report.partial
    assert (report.efficiency, report.throughput_per_hour) == (None, None)
    text = format_report(report)
    assert "(efficiency -: partial run: not every task ended)" in text
    assert "throughput        - (partial run: not every task ended)" in text


def test_nothing_succeeded_means_no_efficiency(tmp_path: Path) -> None:
    report = build(
        tmp_path,
        [
            STARTED,
            *attempt("a", 0.0, 1.0, "failed"),
            (1.0, EventKind.TASK_FAILED, "a", {}),
            (1.0, EventKind.TASK_BLOCKED, "b", {}),
            (1.0, EventKind.RUN_FINISHED, None, {"status": "finished"}),
        ],
    )
    assert not report.partial
    assert report.efficiency is None
    assert report.throughput_per_hour == 0.0
    assert "(efficiency -: no task succeeded)" in format_report(report)


def test_a_run_that_took_no_time_has_no_efficiency(tmp_path: Path) -> None:
    report = build(
        tmp_path,
        [
            STARTED,
            (0.0, EventKind.TASK_FAILED, "a", {}),
            (0.0, EventKind.TASK_BLOCKED, "b", {}),
            (0.0, EventKind.RUN_FINISHED, None, {"status": "finished"}),
        ],
    )
    assert report.makespan == 0.0
    assert (report.efficiency, report.throughput_per_hour) == (None, None)
    assert "(efficiency -: the run took no time)" in format_report(report)


def test_a_finished_run_keeps_its_figures(tmp_path: Path) -> None:
    report = build(
        tmp_path,
        [
            STARTED,
            *attempt("a", 0.0, 4.0, "ok"),
            (4.0, EventKind.TASK_SUCCEEDED, "a", {}),
            *attempt("b", 0.0, 2.0, "ok"),
            (2.0, EventKind.TASK_SUCCEEDED, "b", {}),
            (8.0, EventKind.RUN_FINISHED, None, {"status": "finished"}),
        ],
    )
    assert report.efficiency == 0.5  # the 4 s critical path over 8 s
    assert report.throughput_per_hour == 900.0
    assert "policy            wave\n" in format_report(report)


def test_the_policy_timeline_of_a_run_switched_during_the_run(tmp_path: Path) -> None:
    report = build(
        tmp_path,
        [
            STARTED,
            (12.0, EventKind.POLICY_CHANGED, None, {"policy": "sequential", "previous": "wave"}),
            *attempt("a", 12.0, 30.0, "ok"),
            (30.0, EventKind.TASK_SUCCEEDED, "a", {}),
            *attempt("b", 30.0, 40.0, "ok"),
            (40.0, EventKind.TASK_SUCCEEDED, "b", {}),
            (40.0, EventKind.RUN_FINISHED, None, {"status": "finished"}),
        ],
    )
    assert report.policies == (("wave", 0.0, 12.0), ("sequential", 12.0, 40.0))
    assert "policy            wave 0:00-0:12, sequential 0:12-0:40\n" in format_report(report)
    assert report.to_json_dict()["policies"] == report.policies
