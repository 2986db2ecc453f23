"""Opening a run: a new one, an unfinished one taken up, or a new one that carries
over a finished one's successes; and finding again the attempts a supervisor left.

The journal says which it is (fleetdeck.resume.choose_run picked the run); this
module journals the start, works out the plan from the journal's events and the
config given now, and asks each executor what became of the attempts that never
ended. The core is rebuilt from all that by fleetdeck.engine.takeup.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fleetdeck.addition import appended
from fleetdeck.config import Fleet
from fleetdeck.engine.takeup import Found
from fleetdeck.executors.base import AttemptProcess, Executor
from fleetdeck.journal import Journal, RunRecord
from fleetdeck.model import Attempt
from fleetdeck.resume import (
    ResumePlan,
    carries_over,
    outputs_of,
    plan_carry_over,
    plan_resume,
    reused_runs,
)


@dataclass(slots=True)
class Opening:
    """The run opened: its id, when it started, and the plan to take up (None for
    a new run from scratch)."""

    run_id: int
    started_at: float
    plan: ResumePlan | None


def open_run(
    fleet: Fleet,
    journal: Journal,
    *,
    settings: str,
    previous: RunRecord | None,
    policy: str,
    started_at: float,
) -> Opening:
    """Journal the start of the run, or take over the unfinished `previous` one.

    `settings` is the config as the journal keeps it (secrets masked, compared
    masked too, so that an unchanged secret does not make its tasks look changed).
    """

    def begin() -> int:
        return journal.begin_run(
            fleet=fleet.name,
            config_path=fleet.source,
            config_json=settings,
            policy=policy,
            started_at=started_at,
        )

    if previous is None:
        return Opening(begin(), started_at, None)
    events = journal.events(previous.run_id)
    # The runs it carried successes over from hold those tasks' outputs.
    earlier = {
        run_id: outputs_of(journal.attempts(run_id), str(journal.run_dir(run_id)))
        for run_id in reused_runs(events)
    }
    plan_for = plan_carry_over if carries_over(previous) else plan_resume
    plan = plan_for(
        fleet,
        previous,
        events,
        journal.attempts(previous.run_id),
        new_config=json.loads(settings),
        run_dir=str(journal.run_dir(previous.run_id)),
        earlier=earlier,
    )
    if plan.carried_over:
        # A new run (its own id, directory and clock), started as any other.
        return Opening(begin(), started_at, plan)
    journal.resume_run(previous.run_id, config_json=settings, policy=policy)
    return Opening(previous.run_id, previous.started_at, plan)


@dataclass(slots=True)
class Recovery:
    """What became of the attempts a supervisor left unfinished."""

    found: list[tuple[Attempt, Found]] = field(default_factory=list)
    # The processes still running, by attempt id: supervised again.
    processes: dict[int, AttemptProcess] = field(default_factory=dict)
    reattached: int = 0
    recovered: int = 0
    lost: int = 0


class _Ended(AttemptProcess):
    """An attempt that ended while no supervisor watched, with its recorded status."""

    def __init__(self, status: int) -> None:
        self._status = status

    async def wait(self) -> int:
        return self._status

    async def stop(self, grace: float) -> None:
        """Nothing is left to stop."""


async def find_attempts(
    fleet: Fleet,
    plan: ResumePlan,
    executors: Mapping[str, Executor],
    grace: Callable[[], float],
) -> Recovery:
    """Ask each attempt's executor for it: its process still running, the status
    it recorded, or nothing. Those the config no longer runs as they were are
    stopped (within `grace()` seconds) and count as gone."""
    renewed = {*plan.changed, *plan.invalidated}
    recovery = Recovery()
    for attempt in plan.unfinished:
        executor = executors.get(attempt.host)
        result: AttemptProcess | int | None = None
        if executor is not None:
            try:
                result = await executor.recover(attempt)
            except Exception as exc:  # an executor bug must not stop a resume
                attempt.error = f"cannot find the attempt again: {exc}"
        if attempt.task not in fleet.dag.index or attempt.task in renewed:
            if isinstance(result, AttemptProcess):
                with contextlib.suppress(Exception):
                    await result.stop(grace())
            recovery.found.append((attempt, None))
            continue
        if isinstance(result, AttemptProcess):
            recovery.reattached += 1
            recovery.processes[attempt.attempt_id] = result
            recovery.found.append((attempt, "running"))
        elif isinstance(result, int):
            # Ended while no supervisor watched. Supervised like one still
            # running, so its end goes the same way: a successful agent attempt
            # has what it left committed before its task moves on (else an
            # empty change would land, and its worktree, work and all, go).
            recovery.recovered += 1
            recovery.processes[attempt.attempt_id] = _Ended(result)
            recovery.found.append((attempt, "running"))
        else:
            recovery.lost += 1
            recovery.found.append((attempt, None))
    return recovery


def fleet_with_added(
    fleet: Fleet, journal: Journal, resume: RunRecord | None
) -> tuple[Fleet, list[str]]:
    """The fleet of a run taken up: the config's, plus the tasks added to the run
    (its `task_added` events), and the ids of those left out (see
    `addition.appended`). A finished run's successor is the config's alone."""
    if resume is None or carries_over(resume):
        return fleet, []
    tables = journal.added_tasks(resume.run_id)
    if not tables:
        return fleet, []
    return appended(fleet, tables)
