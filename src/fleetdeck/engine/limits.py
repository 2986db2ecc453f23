"""Agents held back by their provider: rate and usage limits, refused keys, budgets.

Pure, part of the core (engine/core.py owns one `AgentLimits`). An attempt that
ends `throttled` pauses its agent until the limit resets (`retry_after` seconds,
from the server or the agent's `usage_limit`), and its task goes back to run
again then, no retry spent. A refused key (401, 403) holds the agent until the
operator resumes the fleet or retries the task. Costs reported in `usage` add
up per agent and for the run; an agent over its `budget`, or every API agent
once the run is over `[fleet] budget`, takes no new launches: work in flight
finishes, and what was waiting for it fails with the reason (the operator
sees it in the attention queue, and a retry after raising the budget runs it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fleetdeck.engine import ends
from fleetdeck.engine.clock import Timer
from fleetdeck.engine.reroute import reroute, reroute_waiting
from fleetdeck.model import EventKind, Stage, TaskState, iso_timestamp

if TYPE_CHECKING:
    from fleetdeck.engine.core import Core


class AgentLimits:
    """Which agents are paused, until when and why; what each has spent."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.paused_until: dict[str, float] = {}
        self._timers: dict[str, Timer] = {}
        # Agents held until the operator acts: refused key, or budget spent (why).
        self.held: dict[str, str] = {}
        self.spent_out: dict[str, str] = {}
        # What the attention queue says of each agent whose budget is spent, and since when.
        self.attention: dict[str, tuple[float, str]] = {}
        self.cost: dict[str, float] = {}
        self.total_cost = 0.0
        self.tokens_in: dict[str, int] = {}
        self.tokens_out: dict[str, int] = {}
        # Per task (only those that used any): tokens in, out, and cost.
        self.task_usage: dict[int, tuple[int, int, float]] = {}

    # --- throttling -----------------------------------------------------------------

    def throttled(self, node: int, agent: str, details: Mapping[str, Any] | None) -> None:
        """An attempt of `agent` hit a rate or usage limit: pause the agent, and
        put the task back to run once it resumes."""
        core = self.core
        delay = float(
            (details or {}).get("retry_after") or core.fleet.config.fleet.retry_backoff_max
        )
        now = core.clock.now()
        if self.pause_until(agent, now + delay):
            # Journaled, so that a supervisor restarted before the reset keeps
            # the agent paused (resume.throttles reads it back).
            core.emit(
                EventKind.PAUSED,
                None,
                agent=agent,
                until=iso_timestamp(now + delay),
                delay=round(delay, 3),
                reason=(details or {}).get("reason") or "the provider's rate limit",
            )
        resumes = iso_timestamp(self.paused_until[agent])
        spec = core.fleet.config.agents.get(agent)
        after = None if spec is None else spec.fallback_after
        if after is not None and delay > after:
            # Too long a wait: this task and those waiting for the agent go elsewhere.
            why = f"{agent} throttled until {resumes}"
            if reroute(core, node, why):
                core.to_retry_lane(node, f"rerouted to {core.agent_of[node]}")
                reroute_waiting(core, agent, why)
                return
        core.to_retry_lane(node, f"throttled: agent {agent} resumes at {resumes}")

    def pause_until(self, agent: str, until: float) -> bool:
        """Hold `agent`'s launches until `until` (a later time than it is held to);
        False when it already was held that long."""
        if until <= self.paused_until.get(agent, 0.0):
            return False
        self.paused_until[agent] = until
        old = self._timers.pop(agent, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, until - self.core.clock.now())
        self._timers[agent] = self.core.clock.call_later(delay, self._resume, agent)
        self._apply(agent)
        return True

    def _resume(self, agent: str) -> None:
        self._timers.pop(agent, None)
        self.paused_until.pop(agent, None)
        self._apply(agent)
        self.core.effects.schedule_soon()

    def hold(self, agent: str, reason: str) -> None:
        """Launch nothing on `agent` until the operator resumes or retries."""
        self.held[agent] = reason
        self._apply(agent)

    def release(self) -> None:
        """The operator resumed: agents held for a refused key may try again."""
        for agent in list(self.held):
            del self.held[agent]
            self._apply(agent)

    def _apply(self, agent: str) -> None:
        held = agent in self.paused_until or agent in self.held or agent in self.spent_out
        self.core.capacity.hold(Stage.AGENT, agent, held)

    def why(self, agent: str) -> str | None:
        """Why `agent` takes no launches now (None: it does)."""
        if agent in self.spent_out:
            return self.spent_out[agent]
        if agent in self.held:
            return self.held[agent]
        return "throttled" if agent in self.paused_until else None

    # --- usage and budgets -------------------------------------------------------------

    def spend(self, agent: str, usage: Mapping[str, Any], node: int | None = None) -> None:
        """Add an attempt's `usage` (of task `node`); stop launches on what is over budget."""
        tokens_in = int(usage.get("input_tokens", 0))
        tokens_out = int(usage.get("output_tokens", 0))
        cost = float(usage.get("cost", 0.0))
        self.tokens_in[agent] = self.tokens_in.get(agent, 0) + tokens_in
        self.tokens_out[agent] = self.tokens_out.get(agent, 0) + tokens_out
        if node is not None:
            before = self.task_usage.get(node, (0, 0, 0.0))
            self.task_usage[node] = (
                before[0] + tokens_in,
                before[1] + tokens_out,
                before[2] + cost,
            )
        if not cost:
            return
        self.cost[agent] = self.cost.get(agent, 0.0) + cost
        self.total_cost += cost
        config = self.core.fleet.config
        budget = config.agents[agent].budget if agent in config.agents else None
        if budget is not None and self.cost[agent] >= budget and agent not in self.spent_out:
            spent = f"${self.cost[agent]:.4f} of ${budget:g}"
            self._spent(agent, f"budget of agent {agent} spent ({spent})", spent)
        fleet_budget = config.fleet.budget
        if fleet_budget is not None and self.total_cost >= fleet_budget:
            spent = f"${self.total_cost:.4f} of ${fleet_budget:g}"
            reason = f"the fleet's budget is spent ({spent})"
            # Every agent that costs money: those with a price, and any that reported a cost.
            for name, spec in config.agents.items():
                costs = spec.price is not None or name in self.cost
                if costs and name not in self.spent_out:
                    self._spent(name, reason, f"the fleet's {spent}")

    def _spent(self, agent: str, reason: str, spent: str) -> None:
        """No new launches on `agent`; the operator is told in the attention queue
        (the event's `attention`, the views' item) that `spent` of its budget is."""
        self.spent_out[agent] = reason
        self._apply(agent)
        attention = f"budget spent on {agent}: {spent}"
        self.attention[agent] = (self.core.clock.now(), attention)
        self.core.emit(EventKind.PAUSED, None, agent=agent, reason=reason, attention=attention)

    def sweep(self) -> None:
        """Fail the tasks waiting to launch on an agent whose budget is spent
        (they would wait forever): each says why, in the attention queue."""
        core = self.core
        if not core.retry_lane and not any(core.ready.waiting(a) for a in self.spent_out):
            return
        for node, task in enumerate(core.tasks):
            if task.state is not TaskState.READY:
                continue
            reason = self.spent_out.get(core.agent_of[node])
            if reason is None:
                continue
            if reroute(core, node, reason):
                if node in core.ready:
                    core.ready.remove(node)
                    core.make_ready(node, f"rerouted to {core.agent_of[node]}")
                continue
            core.ready.remove(node)
            if node in core.retry_lane:
                core.retry_lane.remove(node)
            ends.give_up(core, node, TaskState.FAILED, reason=reason)


def agent_limits(limits: AgentLimits, agent: str) -> dict[str, Any]:
    """What the views show of `agent`'s limits and usage (PoolView's fields):
    nothing for an agent that is not held and never reported usage."""
    shown: dict[str, Any] = {}
    why = limits.why(agent)
    if why is not None:
        shown["held"] = why
        shown["held_until"] = limits.paused_until.get(agent)
    if agent in limits.tokens_in:
        shown["tokens"] = (limits.tokens_in[agent], limits.tokens_out[agent])
        shown["cost"] = limits.cost.get(agent, 0.0)
    return shown
