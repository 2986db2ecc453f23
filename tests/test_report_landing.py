"""The report's landing figures from event streams: tasks landed, conflicts, CI
reruns because the target moved, and the time from first agent start to landing;
shown for a fleet with a `[repo]`, and not for one without."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import make_fleet
from fleetdeck.config import Fleet
from fleetdeck.headless import format_report
from fleetdeck.metrics import Report, ReportBuilder
from fleetdeck.model import Event, EventKind
from git_support import make_repo
from test_worktrees import land_fleet

T0 = 1_800_000_000.0
TASKS: list[dict[str, Any]] = [
    {"id": "a", "agent": "sh", "prompt": "p"},
    {"id": "b", "agent": "sh", "prompt": "p"},
    {"id": "c", "agent": "sh", "prompt": "p"},
]


def build(
    fleet: Fleet, events: list[tuple[float, EventKind, str | None, dict[str, Any]]]
) -> Report:
    builder = ReportBuilder(fleet)
    for at, kind, task, data in events:
        builder.feed(Event(T0 + at, kind, task, data))
    return builder.report()


def stage(task: str, name: str, start: float, end: float, outcome: str) -> list[Any]:
    return [
        (start, EventKind.ATTEMPT_STARTED, task, {"stage": name, "attempt": 1}),
        (
            end,
            EventKind.ATTEMPT_FINISHED,
            task,
            {"stage": name, "attempt": 1, "outcome": outcome, "duration": end - start},
        ),
    ]


def landing(task: str, at: float) -> list[Any]:
    return [
        (at, EventKind.TASK_LANDED, task, {"commit": "c0ffee"}),
        (at, EventKind.TASK_SUCCEEDED, task, {}),
    ]


# `a` conflicts once, goes back to its agent and lands at 20 s; `b`'s CI reruns
# because the target moved and it lands at 30 s; `c` fails in its agent stage.
EVENTS: list[Any] = [
    (0.0, EventKind.RUN_STARTED, None, {"policy": "wave", "run_id": 1}),
    *stage("a", "agent", 0.0, 4.0, "ok"),
    (4.0, EventKind.MERGE_QUEUED, "a", {}),
    *stage("a", "merge", 5.0, 6.0, "conflict"),
    *stage("a", "agent", 6.0, 10.0, "ok"),
    *stage("a", "merge", 18.0, 20.0, "ok"),
    *landing("a", 20.0),
    *stage("b", "agent", 10.0, 12.0, "ok"),
    *stage("b", "ci", 12.0, 14.0, "ok"),
    *stage("b", "merge", 15.0, 16.0, "retest"),
    *stage("b", "ci", 16.0, 18.0, "ok"),
    *stage("b", "merge", 28.0, 30.0, "ok"),
    *landing("b", 30.0),
    *stage("c", "agent", 0.0, 1.0, "failed"),
    (1.0, EventKind.TASK_FAILED, "c", {}),
    (30.0, EventKind.RUN_FINISHED, None, {"status": "finished"}),
]


def test_the_landing_figures_of_a_fleet_with_a_repo(tmp_path: Path) -> None:
    fleet = land_fleet(tmp_path, make_repo(tmp_path / "repo"), TASKS)
    report = build(fleet, EVENTS)
    assert report.lands
    assert (report.landed, report.conflicts, report.ci_reruns) == (2, 1, 1)
    # a: 0 -> 20, b: 10 -> 30.
    assert report.mean_time_to_land == 20.0
    # Landings are not agent work: b's first CI is its CI stage, not a landing.
    assert report.mean_time_to_first_ci == 2.0
    text = format_report(report)
    assert "landed            2 of 3" in text
    assert "conflicts         1" in text
    assert "CI reruns         1 (the target moved)" in text
    assert "time to land      mean 20.0s from first agent start" in text


def test_a_fleet_without_a_repo_shows_no_landing_figures(tmp_path: Path) -> None:
    plain = [event for event in EVENTS if "merge" not in str(event[3].get("stage"))]
    plain = [event for event in plain if event[1] is not EventKind.TASK_LANDED]
    report = build(make_fleet(tmp_path, TASKS), plain)
    assert not report.lands and report.landed == 0
    assert "landed" not in format_report(report) and "time to land" not in format_report(report)
