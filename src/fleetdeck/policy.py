"""Scheduling policies as objects behind one protocol, and their registry.

A policy answers one question at each launch decision: how many new tasks may
start now? The scheduler (fleetdeck.engine.scheduler) then takes that many from
the ready queue, best first, as slots allow. A policy may keep state between
decisions and hears every outcome (`observe`), so a policy like an in-flight
window that grows on success and shrinks on failure fits the same protocol.

- `sequential`: one task in flight, from its agent start to its last stage's result.
- `wave`: eager; any ready task with a free slot starts, up to `max_in_flight`.
- `pipelined`: as eager as wave, and a dependent may start as soon as its
  dependencies' agent stages succeeded, before their CI (the core's speculation:
  `speculates`); an upstream's later failure preempts it.
- `adaptive`: an in-flight window that grows on success and halves on failure,
  and two admissions (the operator's cognitive load, the CI queue's wait).

Policies are pure (no I/O, no clock of their own): the engine and the simulator
share them, so what the simulator predicts for a policy is what the policy does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from fleetdeck.model import Event, EventKind, Outcome

Policy = Literal["sequential", "wave", "pipelined", "adaptive"]
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
    # What a policy that says `admits = True` is told besides (the core counts
    # them only for such a policy): the terms of the cognitive load
    # (fleetdeck.metrics.load_score) and its capacity, whether a task in flight
    # runs its agent now (a launch adds no new kind of state then), and the CI
    # queue: tasks waiting for a runner, the runners' slots, and the runners'
    # configured `estimate` (the mean, None when none says).
    needs_attention: int = 0
    distinct_states: int = 0
    agent_running: bool = False
    load_capacity: int | None = None
    ci_queued: int = 0
    ci_slots: int = 0
    ci_estimate: float | None = None


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


class Pipelined(Wave):
    """Wave's eagerness, and speculation: a dependent may start on its
    dependencies' agent output before their CI passed (the Zuul gating model).

    The speculation itself is the core's (`speculates`: it releases a task's
    dependents when its agent stage succeeds, and preempts them when a later
    stage of it fails), so the simulator shares it. On a `[repo]` a dependent
    with one dependency works on that upstream's unlanded branch, and lands
    after it (engine/speculation.py).
    """

    name: Policy = "pipelined"
    speculates = True


# Attempt outcomes that halve the adaptive window (a preemption is not one).
_WINDOW_FAILURES = frozenset({Outcome.FAILED, Outcome.TIMEOUT, Outcome.CONFLICT})


class Adaptive:
    """An in-flight window like Zuul's, and two admissions.

    The window starts at `window`, grows by one each time a task succeeds and
    halves each time an attempt fails, never below `window_min` nor above the
    fleet's `max_in_flight`. Within it, no launch may take the operator's
    cognitive load over its capacity (`load`, on unless set false; one task
    may start with nothing in flight, so a run nobody attends still ends), and no new
    agent starts while the CI queue's predicted wait is over `ci_wait_max`
    seconds: the tasks queued for a runner times the mean CI duration (seen so
    far in this run, else the runners' `estimate`), over the runners' slots.
    Every change of the window is told as a `window_changed` event (`events`,
    which the core drains).
    """

    name: Policy = "adaptive"
    observes = True
    admits = True

    def __init__(
        self,
        window: int = 2,
        window_min: int = 1,
        ci_wait_max: float | None = None,
        load: bool = True,
    ) -> None:
        self.window = window
        self.window_min = window_min
        self.ci_wait_max = ci_wait_max
        self.load = load
        self.window_max: int | None = None
        # (kind, details) of events the core tells for the policy, drained by it.
        self.events: list[tuple[EventKind, dict[str, Any]]] = []
        self._ci_seconds = 0.0
        self._ci_count = 0
        # Why the last decision admitted fewer than the window allowed (views, tests).
        self.held: str | None = None

    def budget(self, context: LaunchContext) -> int:
        """The window's room, cut to what both admissions allow."""
        self.held = None
        if context.paused:
            return 0
        if context.max_in_flight is not None and self.window_max != context.max_in_flight:
            self.window_max = context.max_in_flight
            if self.window > self.window_max:
                self._set(self.window_max, "max_in_flight")
        room = max(0, min(self.window, _cap(context)) - context.in_flight)
        if room == 0:
            return 0
        if self.ci_wait_max is not None:
            wait = self.ci_wait(context)
            if wait is not None and wait > self.ci_wait_max:
                self.held = f"CI queue wait {wait:.0f}s > {self.ci_wait_max:g}s"
                return 0
        if self.load and context.load_capacity is not None:
            admitted = self.load_room(context, room)
            if admitted == 0 and context.in_flight == 0:
                # Never none at all: failures left for the operator would
                # otherwise hold a run without one (headless) forever.
                admitted = 1
            if admitted < room:
                self.held = "cognitive load at capacity"
            room = admitted
        return room

    def load_room(self, context: LaunchContext, room: int) -> int:
        """How many of `room` launches keep the load within its capacity."""
        from fleetdeck.metrics import load_score  # the formula's one home

        assert context.load_capacity is not None
        # A launched task runs its agent: one more kind of state unless one does.
        distinct = context.distinct_states + (0 if context.agent_running else 1)
        admitted = 0
        while admitted < room:
            score = load_score(context.in_flight + admitted + 1, context.needs_attention, distinct)
            if score > context.load_capacity:
                break
            admitted += 1
        return admitted

    def ci_wait(self, context: LaunchContext) -> float | None:
        """The CI queue's predicted wait for a task joining it now (None: no
        runner, or no CI duration known yet)."""
        if context.ci_slots <= 0:
            return None
        mean = self._ci_seconds / self._ci_count if self._ci_count else context.ci_estimate
        if mean is None:
            return None
        return context.ci_queued * mean / context.ci_slots

    def observe(self, event: Event) -> None:
        """Grow on a task's success, halve on a failed attempt; learn CI durations."""
        kind = event.kind
        if kind is EventKind.TASK_SUCCEEDED:
            self._set(self.window + 1, f"'{event.task}' succeeded")
        elif kind is EventKind.ATTEMPT_FINISHED:
            data = event.data
            if data.get("stage") == "ci" and data.get("outcome") in (Outcome.OK, Outcome.FAILED):
                self._ci_seconds += float(data.get("duration") or 0.0)
                self._ci_count += 1
            if data.get("outcome") in _WINDOW_FAILURES:
                stage = data.get("stage", "agent")
                self._set(self.window // 2, f"'{event.task}' failed in {stage}")

    def _set(self, window: int, reason: str) -> None:
        floor = self.window_min
        ceiling = self.window_max if self.window_max is not None else UNLIMITED
        window = max(floor, min(window, max(ceiling, floor)))
        if window != self.window:
            previous, self.window = self.window, window
            self.events.append(
                (
                    EventKind.WINDOW_CHANGED,
                    {"window": window, "previous": previous, "reason": reason},
                )
            )

    def resume_window(self, window: int) -> None:
        """Go on with the window a run taken up had (within this policy's bounds)."""
        self.window = max(self.window_min, window)

    def describe(self) -> str:
        """The policy and its window (`adaptive 3`)."""
        return f"{self.name} {self.window}"


# The registry: every policy by name, in the order the `s` key cycles through them.
POLICIES: dict[Policy, type[Sequential] | type[Wave] | type[Adaptive]] = {
    "sequential": Sequential,
    "wave": Wave,
    "pipelined": Pipelined,
    "adaptive": Adaptive,
}


def make_policy(name: str, params: Mapping[str, Any] | None = None) -> SchedulingPolicy:
    """A fresh policy object by name, with its parameters (ValueError if unknown).

    Policies without parameters refuse any, so a typo in the config is an error.
    """
    policy = parse_policy(name)
    if policy == "adaptive":
        return _adaptive(params or {})
    if params:
        raise ValueError(f"policy {policy!r} takes no parameters (got {', '.join(params)})")
    return POLICIES[policy]()


def _adaptive(params: Mapping[str, Any]) -> Adaptive:
    """The adaptive policy with its `[policies.adaptive]` parameters, checked."""
    known = ("window", "window_min", "ci_wait_max", "load")
    unknown = [key for key in params if key not in known]
    if unknown:
        raise ValueError(f"policy 'adaptive' takes {', '.join(known)} (not {', '.join(unknown)})")

    def count(key: str, default: int) -> int:
        value = params.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"adaptive {key} must be a whole number of 1 or more (got {value!r})")
        return value

    window, window_min = count("window", 2), count("window_min", 1)
    if window < window_min:
        raise ValueError(f"adaptive window ({window}) is below window_min ({window_min})")
    wait = params.get("ci_wait_max")
    if wait is not None and (
        isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0
    ):
        raise ValueError(f"adaptive ci_wait_max must be seconds, 0 or more (got {wait!r})")
    load = params.get("load", True)
    if not isinstance(load, bool):
        raise ValueError(f"adaptive load must be true or false (got {load!r})")
    return Adaptive(window, window_min, None if wait is None else float(wait), load)


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
