"""Fallbacks and optional tasks (pure, part of the core).

A task reroutes to a fallback agent (its own `fallback`, else its agent's) when
its attempts on its agent are spent, when its agent is over budget, or when its
agent is throttled for longer than the agent's `fallback_after`. It keeps its
place (in flight or ready), gets a fresh retry budget on the new agent, and the
journal says so (`task_rerouted`). Each agent is tried once per task: a chain
of fallbacks ends where it would come back.

An `optional` task that fails does not block its dependents: they run, and its
input to them says it is missing and why (`missing_input`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fleetdeck.model import EventKind, TaskState

if TYPE_CHECKING:
    from fleetdeck.engine.core import Core


def fallback_of(core: Core, node: int) -> str | None:
    """The agent task `node` would go to now, if it has one it has not tried."""
    spec = core.specs[node]
    current = core.agent_of[node]
    tried = core.tried_agents.get(node, ())
    agents = core.fleet.config.agents
    for candidate in (spec.fallback, agents[current].fallback):
        if candidate is not None and candidate != current and candidate not in tried:
            return candidate
    return None


def reroute(core: Core, node: int, reason: str) -> bool:
    """Send task `node` to its fallback agent; False when it has none left.

    The caller puts it back to run: in flight, through the retry lane; ready,
    back in the ready queue (`requeue_ready`)."""
    to = fallback_of(core, node)
    if to is None:
        return False
    task = core.tasks[node]
    origin = core.agent_of[node]
    core.tried_agents.setdefault(node, set()).add(origin)
    core.agent_of[node] = to
    task.failures = 0
    task.lost = 0
    core.tell(EventKind.TASK_REROUTED, task.id, node, {"from": origin, "to": to, "reason": reason})
    return True


def reroute_waiting(core: Core, agent: str, reason: str) -> None:
    """Every task waiting to launch on `agent` goes to its fallback, if it has one."""
    for node, task in enumerate(core.tasks):
        if task.state is not TaskState.READY or core.agent_of[node] != agent:
            continue
        in_lane = node in core.retry_lane
        if not in_lane and node not in core.ready:
            continue
        if not reroute(core, node, reason):
            continue
        if in_lane:
            continue  # the lane takes it on its new agent
        core.ready.remove(node)
        core.make_ready(node, f"rerouted to {core.agent_of[node]}")
    core.effects.schedule_soon()


def missing_text(task_id: str, reason: str) -> str:
    """What the dependents of the failed optional task `task_id` read for it."""
    return f"(missing: optional task '{task_id}' failed: {reason})"


def take_up(core: Core, node: int, agent: str | None, left: Sequence[str]) -> None:
    """A resumed run: task `node` runs on `agent`, where the journal says it was
    rerouted (None: its own), and has left the agents `left` behind."""
    if agent is not None and agent in core.fleet.config.agents:
        core.agent_of[node] = agent
    if left:
        core.tried_agents[node] = set(left)


def take_up_missing(core: Core, node: int, reason: str | None) -> None:
    """A resumed run: task `node`, optional, failed (for `reason`): its
    dependents wait for it no more, and read what is missing, as in the live run."""
    core.missing[node] = missing_text(core.tasks[node].id, reason or "failed")
    for child in core.dag.dependents[node]:
        core.waiting_on[child] -= 1


def missing_input(core: Core, node: int) -> str | None:
    """What a dependent reads for task `node`, an optional task that failed."""
    return core.missing.get(node)
