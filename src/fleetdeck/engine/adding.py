"""Tasks added to a running fleet, as a transition of the core.

Pure, like the rest of the core. Every structure of the core sized by the
number of tasks grows: the task table, the pipelines, each task's agent, what
each waits on, the DAG (levels and critical path: a new dependent can lengthen
an old task's chain), and the views (rebuilt whole once). Each added task is
told as `task_added` with its table, then placed as the lifecycle would have
placed it: ready at once when its dependencies are all done, blocked when one
of them failed or was cancelled (or is blocked), else pending.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetdeck.addition import task_table
from fleetdeck.model import EventKind, TaskRun, TaskState
from fleetdeck.stages import pipeline

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fleetdeck.config import Fleet
    from fleetdeck.engine.core import Core


def grow(core: Core, fleet: Fleet, estimates: Sequence[float]) -> list[int]:
    """Take up `fleet`, the core's fleet with tasks appended; returns their nodes.

    `estimates` weighs every task of `fleet` (the ready queue's critical path)."""
    first = len(core.tasks)
    config = fleet.config
    core.fleet = fleet
    core.specs = fleet.tasks
    core.dag = fleet.dag
    added = list(range(first, len(fleet.tasks)))
    for node in added:
        spec = fleet.tasks[node]
        core.tasks.append(TaskRun(id=spec.id))
        core.pipelines.append(pipeline(spec, config))
        core.agent_of.append(spec.agent)
        core.waiting_on.append(0)
    # The tasks already ready keep their place in the queue (their keys are built
    # when pushed); what becomes ready from now on is ranked on the new paths.
    core.critical = fleet.dag.critical_path(estimates)
    core.unfinished += len(added)
    # Every view is rebuilt at the next look (the list of them grows).
    core.dirty = None
    return added


def place(core: Core, nodes: Sequence[int]) -> None:
    """Tell each added task and put it where the lifecycle would: ready, blocked
    or pending (in topological order: an added task may depend on another)."""
    for node in nodes:
        core.tell(
            EventKind.TASK_ADDED, core.tasks[node].id, node, {"spec": task_table(core.specs[node])}
        )
    wanted = set(nodes)
    for node in core.dag.topo:
        if node not in wanted:
            continue
        task = core.tasks[node]
        # Done (or, under a speculating policy, released on its agent output; or
        # failed but optional) is not waited for: as the lifecycle counts down.
        # A blocked task keeps its count too, for when its blocker is retried.
        core.waiting_on[node] = sum(
            1
            for dep in core.dag.deps[node]
            if core.tasks[dep].state is not TaskState.SUCCEEDED
            and dep not in core.released
            and dep not in core.missing
        )
        blocker = core.blocker_of(node)
        if blocker is not None:
            task.state = TaskState.BLOCKED
            task.blocked_by = blocker
            if core.needs_attention_as_blocked(node):
                task.attention_since = core.clock.now()
            core.unfinished -= 1
            core.tell(EventKind.TASK_BLOCKED, task.id, node, {"blocked_by": blocker})
            continue
        if core.waiting_on[node] == 0:
            core.make_ready(node)
    core.effects.schedule_soon()
