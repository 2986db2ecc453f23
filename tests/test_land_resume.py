"""A task waiting to land on a dirty checked-out target, across a restart of the
supervisor: the resumed run says why it waits from its first moment, with the
wait's age kept, and lands once the user cleans their checkout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import EngineHarness, Run
from fleetdeck.engine import Engine
from fleetdeck.journal import Journal
from fleetdeck.model import Event, EventKind, TaskState
from fleetdeck.resume import choose_run
from git_support import git, make_repo
from test_land import assert_nothing_left, outcomes
from test_worktrees import land_fleet, landing

REASON = "target checked out with local changes to README"


def attention(engine: Engine) -> list[tuple[str, TaskState, str | None, float]]:
    return [
        (item.task, item.state, item.reason, item.since) for item in engine.snapshot().attention
    ]


async def test_a_task_waiting_on_a_dirty_target_is_still_flagged_after_a_restart(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", {"README": "hello\n"})
    (repo / "README").write_text("my own edit\n")
    task = {"id": "a", "agent": "sh", "prompt": "echo theirs > README", "retries": 0}
    fleet = land_fleet(tmp_path, repo, [task])

    def stop_at_the_wait(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.MERGE_QUEUED and "reason" in event.data:
            engine.request_stop()

    first = await harness.run(fleet, during=stop_at_the_wait, **landing(fleet, tmp_path))
    assert first.state("a") == "merge_queued"
    ((_, _, reason, flagged_at),) = attention(first.engine)
    since = pytest.approx(flagged_at, abs=0.01)  # the journal keeps milliseconds
    assert reason == REASON

    for journal in harness.journals:  # the first supervisor is gone
        journal.close()
    harness.journals.clear()
    journal = Journal(tmp_path / "state")
    harness.journals.append(journal)
    resume = choose_run(journal.latest_run(), fleet.name, str(tmp_path / "state"))
    assert resume is not None
    engine = Engine(fleet, journal=journal, resume=resume, **landing(fleet, tmp_path))
    seen: list[Any] = []
    events: list[Event] = []

    def during(event: Event) -> None:
        events.append(event)
        if event.kind is EventKind.RUN_RESUMED:
            # Taken up already trying to land again: flagged from the start.
            seen.append(attention(engine))
        if event.kind is EventKind.MERGE_QUEUED and "reason" in event.data:
            seen.append(attention(engine))
            git(repo, "checkout", "--", "README")

    engine.subscribe(during)
    result = await engine.run()
    second = Run(result=result, events=events, state_dir=tmp_path / "state", engine=engine)
    assert second.state("a") == "succeeded"
    # Waiting since the first supervisor saw it wait, not since the restart.
    assert seen == [
        [("a", TaskState.MERGING, REASON, since)],
        [("a", TaskState.MERGE_QUEUED, REASON, since)],
    ]
    assert outcomes(second, "a", "merge") == ["wait", "ok"]
    assert git(repo, "show", "main:README") == "theirs"
    assert second.engine.snapshot().attention == ()
    assert_nothing_left(repo)
