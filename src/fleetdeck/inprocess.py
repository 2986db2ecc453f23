"""`InProcessClient`: the `EngineClient` of a view in the engine's own process.

It answers from the `Engine` directly: snapshots and commands by a method call,
logs read from disk with the fleet's secrets masked, and the what-if from a
prediction process of its own (fleetdeck.whatif), so the simulations never hold
the view's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fleetdeck.client import Listener, LogFeed, WhatIfUnavailable
from fleetdeck.logtail import LogFollower, last_line, last_lines

if TYPE_CHECKING:
    from fleetdeck.engine import Engine
    from fleetdeck.model import Stage
    from fleetdeck.snapshot import FleetSnapshot, TaskDetail, Timeline
    from fleetdeck.whatif import PredictionProcess


class InProcessClient:
    """An `EngineClient` over an `Engine` in this process."""

    def __init__(self, engine: Engine, *, what_if: bool = True) -> None:
        """`what_if`: answer `what_if` (from a prediction process of its own,
        started on the first question: see fleetdeck.whatif)."""
        self.engine = engine
        self._redactor = engine.redactor
        self._what_if = what_if
        self._predictions: PredictionProcess | None = None

    def snapshot(self) -> FleetSnapshot:
        """The whole run at this instant."""
        return self.engine.snapshot()

    def task_detail(self, task_id: str) -> TaskDetail:
        """One task's attempts, inputs and output (CommandError for an unknown task)."""
        return self.engine.task_detail(task_id)

    def timeline(self) -> Timeline:
        """Every attempt so far and the slots they ran in."""
        return self.engine.timeline()

    async def task_diff(self, task_id: str) -> str:
        """The patch of the change the task's agent committed last, secrets masked."""
        return self._redactor.text(await self.engine.task_diff(task_id))

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with each event once it is journaled; returns an unsubscribe."""
        return self.engine.subscribe(listener)

    def set_policy(self, name: str) -> None:
        """Switch policy for the next launch decision."""
        self.engine.set_policy(name)

    def pause(self) -> None:
        """Hold back new launches (work in flight goes on)."""
        self.engine.pause()

    def resume(self) -> None:
        """Let launches start again."""
        self.engine.resume()

    def cancel(self, task_id: str) -> None:
        """Cancel a task: stop its attempt and block its dependents."""
        self.engine.cancel(task_id)

    def retry(self, task_id: str, stage: str | None = None) -> None:
        """Run a failed or cancelled task (or a blocked root's blockers) again;
        `stage` "ci": CI alone, on the agent's output (see EngineClient.retry)."""
        self.engine.retry(task_id, stage)

    def retry_stages(self, task_id: str) -> tuple[Stage, ...]:
        """The stages a retry of `task_id` may start from."""
        return self.engine.retry_stages(task_id)

    def acknowledge(self, task_id: str) -> None:
        """The operator has seen a task that needs attention."""
        self.engine.acknowledge(task_id)

    def request_stop(self, *, hurry: bool = False) -> None:
        """Stop the run cleanly; `hurry`: with no grace period."""
        self.engine.request_stop(hurry=hurry)

    async def add(self, tasks: list[dict[str, Any]], *, source: str = "add") -> list[str]:
        """Add tasks to the running fleet; their ids, once journaled."""
        ids = await self.engine.add(tasks, source=source)
        if self._predictions is not None:
            # Its fleet (pickled to it) is the one before: the next what-if starts afresh.
            self._predictions.close()
            self._predictions = None
        return ids

    def last_lines(self, logs: Iterable[str], count: int = 1) -> dict[str, list[str]]:
        """The last `count` lines of each log, secrets masked (see EngineClient)."""
        redact = self._redactor
        if count == 1:
            return {log: [line] if (line := last_line(log, redact=redact)) else [] for log in logs}
        return {log: last_lines(log, count, redact=redact) for log in logs}

    def follow_log(self, log: str) -> LogFeed:
        """A feed of the log's lines as they are written, secrets masked."""
        return LogFollower(log, redact=self._redactor)

    @property
    def what_if_available(self) -> bool:
        """True unless predictions were turned off."""
        return self._what_if

    async def what_if(self) -> dict[str, float]:
        """Each policy's remaining time, predicted in a process of its own (see
        fleetdeck.whatif): the progress per task is read here, on the loop, from
        the engine's own state; the simulations run there."""
        if not self._what_if:
            raise WhatIfUnavailable("predictions are off")
        from fleetdeck.lab import progress_of
        from fleetdeck.whatif import NoBasis, PredictionError, PredictionProcess, Predictor

        if self._predictions is None:
            engine = self.engine
            self._predictions = PredictionProcess(Predictor(engine.fleet, engine.state_dir))
        process = self._predictions
        progress = progress_of(self.engine.core)
        loop = asyncio.get_running_loop()
        try:
            # In a thread: the first one starts the process (the fleet is pickled
            # to it, and the pipe takes it as fast as the new interpreter reads).
            await loop.run_in_executor(None, process.send, progress)
            answered: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not answered.done():
                    answered.set_result(None)

            fd = process.fileno()
            loop.add_reader(fd, readable)
            try:
                await answered
            finally:
                loop.remove_reader(fd)
            return process.receive()
        except NoBasis as exc:
            raise WhatIfUnavailable(str(exc), learning=True) from None
        except PredictionError as exc:
            raise WhatIfUnavailable(str(exc)) from None

    def close(self) -> None:
        """End the prediction process, if one was started."""
        if self._predictions is not None:
            self._predictions.close()
            self._predictions = None
