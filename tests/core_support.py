"""A `Core` run in virtual time by the test itself: no loop, no processes, no sleeps.

`Recorder` carries out the core's effects by writing them down; `CoreSim` holds a
core, a `VirtualClock` and a recorder, and gives the test the moves of a shell:
settle the launch decision, start an attempt, end it, let time pass.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetdeck.config import Fleet, parse_fleet
from fleetdeck.engine.clock import VirtualClock
from fleetdeck.engine.core import Core, Running
from fleetdeck.model import Attempt, Event, Outcome, Stage, TaskState
from fleetdeck.policy import make_policy
from fleetdeck.stages import STAGES, workers


class Recorder:
    """The core's effects, written down: nothing runs until the test says so."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        # The node the core passed with each event (None: not passed).
        self.nodes: list[int | None] = []
        # (attempt id, task, stage, outcome) as each row was recorded.
        self.records: list[tuple[int, str, Stage, Outcome | None]] = []
        self.started: list[Running] = []
        self.stopped: list[tuple[Running, float | None]] = []
        self.soon = False
        # Called at each start, before it is written down (invariant checks).
        self.on_start: Callable[[Running], None] | None = None

    def emit(self, event: Event, node: int | None = None) -> None:
        self.events.append(event)
        self.nodes.append(node)

    def record(self, attempt: Attempt) -> None:
        self.records.append((attempt.attempt_id, attempt.task, attempt.stage, attempt.outcome))

    def start(self, running: Running) -> None:
        if self.on_start is not None:
            self.on_start(running)
        self.started.append(running)

    def stop(self, running: Running, grace: float | None) -> None:
        self.stopped.append((running, grace))

    def schedule_soon(self) -> None:
        self.soon = True


def fleet_toml(
    tasks: list[dict[str, Any]],
    *,
    slots: int = 3,
    runner_slots: int = 1,
    agents: dict[str, int] | None = None,
    **settings: Any,
) -> str:
    """The TOML text of a fleet: agents (name -> slots, default `coder`), runner `ci`."""
    lines = ["[fleet]", 'name = "core"']
    settings = {"retry_backoff": 1.0, **settings}
    lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
    for name, count in (agents or {"coder": slots}).items():
        lines += ["", f"[agents.{name}]", 'command = ["true"]', f"slots = {count}"]
    lines += ["", "[runners.ci]", 'command = ["true"]', f"slots = {runner_slots}"]
    for task in tasks:
        fields = {"agent": "coder", **task}
        lines += ["", "[[tasks]]", *(f"{key} = {_toml(value)}" for key, value in fields.items())]
    return "\n".join(lines) + "\n"


def chain(*ids: str, **fields: object) -> list[dict[str, Any]]:
    """Tasks each depending on the one before."""
    return [
        {"id": task, **({"depends_on": [ids[i - 1]]} if i else {}), **fields}
        for i, task in enumerate(ids)
    ]


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return str(value)


class CoreSim:
    """A core in virtual time, and the moves a shell would make for it."""

    def __init__(self, text: str, *, policy: str | None = None, seed: int = 7) -> None:
        self.fleet: Fleet = parse_fleet(text, source="core.toml", base_dir=Path("/nonexistent"))
        self.clock = VirtualClock()
        self.fx = Recorder()
        self.core = Core(
            self.fleet,
            clock=self.clock,
            effects=self.fx,
            policy=make_policy(policy or self.fleet.config.fleet.policy),
            estimates=[1.0] * len(self.fleet.tasks),
            rng=random.Random(seed),
        )
        self._taken = 0
        self._launched = 0

    # --- moves ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the run and take the first launch decision, as the shell does."""
        self.core.start()
        self.core.schedule()
        self.settle()

    def settle(self) -> None:
        """Honour `schedule_soon` until nothing more asks for a decision."""
        while self.fx.soon:
            self.fx.soon = False
            self.core.schedule()

    def running(self, task: str) -> Running:
        """The attempt of `task` running now."""
        running = self.core.running_for(self.core.node(task))
        assert running is not None, f"{task} has no attempt running"
        return running

    def begin(self, task: str, pid: int = 100) -> Running:
        """The process of `task`'s attempt exists."""
        running = self.running(task)
        self.core.attempt_started(running, pid=pid)
        return running

    def end(self, task: str, exit_code: int | None = 0, outcome: Outcome | None = None) -> Running:
        """`task`'s attempt ends (started first if it was not); then settle."""
        running = self.running(task)
        if running.attempt.pid is None and running.attempt.error is None:
            self.core.attempt_started(running, pid=100)
        self.core.attempt_ended(running, outcome, exit_code)
        self.settle()
        return running

    def advance(self, seconds: float) -> None:
        """Let virtual time pass (timers fire), then settle."""
        self.clock.advance(seconds)
        self.settle()

    # --- what happened -------------------------------------------------------------

    def take(self) -> list[tuple[str, str | None]]:
        """(event, task) of every event since the last take."""
        return [(str(e.kind), e.task) for e in self.take_events()]

    def take_events(self) -> list[Event]:
        """The events since the last take."""
        events = self.fx.events[self._taken :]
        self._taken = len(self.fx.events)
        return events

    def launched(self) -> list[tuple[str, str]]:
        """(task, stage) of every attempt launched since the last call."""
        new = self.fx.started[self._launched :]
        self._launched = len(self.fx.started)
        return [(r.attempt.task, str(r.attempt.stage)) for r in new]

    def state(self, task: str) -> TaskState:
        """`task`'s state now."""
        return self.core.tasks[self.core.node(task)].state

    def states(self) -> dict[str, str]:
        """Every task's state, by id."""
        return {task.id: str(task.state) for task in self.core.tasks}

    def busy_slots(self) -> int:
        """Slots held over every agent and runner."""
        config = self.fleet.config
        return sum(
            self.core.capacity.usage(stage, name).busy
            for stage in STAGES
            for name in workers(config, stage)
        )
