"""Scheduling policies as objects behind one protocol, and their registry.

A policy answers one question at each launch decision: how many new tasks may
start now? The scheduler (fleetdeck.engine.scheduler) then takes that many from
the ready queue, best first, as slots allow. A policy may keep state between
decisions and hears every outcome (`observe`), so a policy like an in-flight
window that grows on success and shrinks on failure fits the same protocol.

- `sequential`: one task in flight, from its agent start to its last stage's result.
- `wave`: eager; any ready task with a free slot starts, up to `max_in_flight`.

Policies are pure (no I/O, no clock of their own): the engine and the simulator
share them, so what the simulator predicts for a policy is what the policy does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from fleetdeck.model import Event

Policy = Literal["sequential", "wave"]
POLICY_NAMES: tuple[Policy, ...] = get_args(Policy)

# "No limit" for a budget: larger than any fleet.
UNLIMITED = 1 << 62


@dataclass(slots=True, frozen=True)
class LaunchContext:
    """What a policy needs to know to size the next launch decision.

    `in_flight` counts tasks between their first launch and their end (running,
    waiting for or running a later stage, waiting to retry).
    """

    in_flight: int
    max_in_flight: int | None = None
    paused: bool = False


class SchedulingPolicy(Protocol):
    """What every policy offers the scheduler."""

    name: Policy
    # False when `observe` does nothing: the core then does not call it (four
    # events a task, 100,000 tasks: the calls alone are a measurable share). A
    # policy without the attribute is taken to observe.
    observes: bool

    def budget(self, context: LaunchContext) -> int:
        """How many new tasks may start now (0 or more). A question only: it
        changes nothing, so the core may skip it when no task is ready."""

    def observe(self, event: Event) -> None:
        """Hear an event of the run (attempt outcomes, task ends): a policy that
        keeps state updates it here. It must not raise."""

    def describe(self) -> str:
        """A few words for the header and the report (`wave`, `window 3/8`...)."""


def _cap(context: LaunchContext) -> int:
    return UNLIMITED if context.max_in_flight is None else context.max_in_flight


class Wave:
    """Eager DAG scheduling: every ready task with a free slot starts."""

    name: Policy = "wave"
    observes = False

    def budget(self, context: LaunchContext) -> int:
        """Everything the fleet's cap leaves room for."""
        if context.paused:
            return 0
        return max(0, _cap(context) - context.in_flight)

    def observe(self, event: Event) -> None:
        """Keeps no state."""

    def describe(self) -> str:
        """Its name."""
        return self.name


class Sequential:
    """Exactly one task in flight: the next starts when the last is done or given up."""

    name: Policy = "sequential"
    observes = False

    def budget(self, context: LaunchContext) -> int:
        """One task at most, and none while one is in flight."""
        if context.paused:
            return 0
        return max(0, min(_cap(context), 1) - context.in_flight)

    def observe(self, event: Event) -> None:
        """Keeps no state."""

    def describe(self) -> str:
        """Its name."""
        return self.name


# The registry: every policy by name, in the order the `s` key cycles through them.
POLICIES: dict[Policy, type[Sequential] | type[Wave]] = {
    "sequential": Sequential,
    "wave": Wave,
}


def make_policy(name: str, params: Mapping[str, Any] | None = None) -> SchedulingPolicy:
    """A fresh policy object by name, with its parameters (ValueError if unknown).

    Policies without parameters refuse any, so a typo in the config is an error.
    """
    policy = parse_policy(name)
    if params:
        raise ValueError(f"policy {policy!r} takes no parameters (got {', '.join(params)})")
    return POLICIES[policy]()


def launch_budget(policy: Policy, context: LaunchContext) -> int:
    """How many new tasks may start now under the policy named `policy`."""
    return make_policy(policy).budget(context)


def parse_policy(name: str) -> Policy:
    """`name` as a Policy, or ValueError naming the valid ones."""
    for policy in POLICY_NAMES:
        if policy == name:
            return policy
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")


def next_policy(policy: Policy) -> Policy:
    """The policy after `policy` in the registry's order (the `s` key cycles)."""
    names = list(POLICIES)
    return names[(names.index(policy) + 1) % len(names)]
