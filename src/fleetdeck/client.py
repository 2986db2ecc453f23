"""How a view talks to an engine: the `EngineClient` interface (and
`fleetdeck.inprocess.InProcessClient`, which answers it from an `Engine` in this
process).

A view (the TUI, the headless printer) reads snapshots, hears events and sends
commands through an `EngineClient`, and through nothing else of the engine. What
it gets back is plain data (fleetdeck.snapshot), so that a client at the other
end of the state directory's socket can answer the same interface for a TUI
attached from another terminal.

Attempt logs are read by request too: the client reads them and masks the
fleet's secrets with the engine's redactor, so a view never holds the redactor
and never needs the log files on its own machine. A log is named by its path,
as snapshots give it (`AttemptView.log_path`, `AttemptRecord.log_path`); a
client that answers for another process must read only the logs of its run.

A view also holds a `RunHandle`: whether the run it shows has ended, and how
(fleetdeck.lifecycle runs an engine in this process and implements it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

# The one name views take from the engine: the error its commands raise. The
# core is pure (no event loop, journal or executors: see pyproject.toml), so a
# view loads none of those through it.
from fleetdeck.engine.core import CommandError

if TYPE_CHECKING:
    from fleetdeck.metrics import Report, TaskSummary
    from fleetdeck.model import Event, Stage
    from fleetdeck.snapshot import FleetSnapshot, TaskDetail, Timeline

__all__ = [
    "CommandError",
    "EngineClient",
    "Listener",
    "LogFeed",
    "RunHandle",
    "RunOutcome",
    "WhatIfUnavailable",
]

Listener = Callable[["Event"], None]


class LogFeed(Protocol):
    """New lines of one attempt's log as they come (secrets masked)."""

    @property
    def skipped(self) -> int:
        """Bytes at the start of the log never shown (only its tail is read)."""
        ...

    def read(self) -> list[str]:
        """The complete lines written since the last call."""
        ...


class EngineClient(Protocol):
    """Everything a view needs of an engine, and nothing else.

    Commands raise `CommandError` (its message says why) when they cannot be
    carried out: an unknown task, a task in a state the command does not apply to.
    """

    def snapshot(self) -> FleetSnapshot:
        """The whole run at this instant."""
        ...

    def task_detail(self, task_id: str) -> TaskDetail:
        """One task's attempts, inputs and output (CommandError for an unknown task)."""
        ...

    def timeline(self) -> Timeline:
        """Every attempt so far and the slots they ran in."""
        ...

    async def task_diff(self, task_id: str) -> str:
        """The patch of the change the task's agent committed last, uncoloured,
        secrets masked (CommandError when there is none to show)."""
        ...

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with each event once it is journaled; returns an unsubscribe."""
        ...

    def set_policy(self, name: str) -> None:
        """Switch policy for the next launch decision."""
        ...

    def pause(self) -> None:
        """Hold back new launches (work in flight goes on)."""
        ...

    def resume(self) -> None:
        """Let launches start again."""
        ...

    def cancel(self, task_id: str) -> None:
        """Cancel a task: stop its attempt and block its dependents."""
        ...

    def retry(self, task_id: str, stage: str | None = None) -> None:
        """Run a failed or cancelled task (or a blocked root's blockers) again.

        `stage` "ci" reruns CI alone on the agent's existing output, for a task
        whose CI failed (a flaky test); None or "agent": the agent, then the rest."""
        ...

    def retry_stages(self, task_id: str) -> tuple[Stage, ...]:
        """The stages a retry of `task_id` may start from: the agent always, and
        CI too when the task failed in CI (CommandError for an unknown task)."""
        ...

    def acknowledge(self, task_id: str) -> None:
        """The operator has seen a task that needs attention."""
        ...

    def request_stop(self, *, hurry: bool = False) -> None:
        """Stop the run cleanly; `hurry`: with no grace period."""
        ...

    async def add(self, tasks: list[dict[str, Any]], *, source: str = "add") -> list[str]:
        """Add tasks (`[[tasks]]` tables, as in the config) to the running fleet;
        their ids, once journaled. Raises CommandError with the config's message
        (`source`: where the tables came from, as the message names it)."""
        ...

    def last_lines(self, logs: Iterable[str], count: int = 1) -> dict[str, list[str]]:
        """The last `count` non-empty lines of each log (cleaned of escape
        sequences, secrets masked); no lines for a log that is missing or empty.
        With `count` 1, even a line longer than what is read of the log's end
        comes, cut at its start and marked `…`."""
        ...

    @property
    def what_if_available(self) -> bool:
        """True when `what_if` can answer (predictions may be turned off)."""
        ...

    async def what_if(self) -> dict[str, float]:
        """Seconds each policy would take to finish the work left, predicted from
        the run as it is now (simulations, run away from the view's loop: it may
        take seconds). Raises WhatIfUnavailable when no prediction can be had."""
        ...

    def close(self) -> None:
        """Let go of what the client holds (a prediction process, a connection)."""
        ...

    def follow_log(self, log: str) -> LogFeed:
        """A feed of the log's lines as they are written, from near its end."""
        ...


class RunOutcome(Protocol):
    """How a run ended."""

    @property
    def exit_code(self) -> int:
        """0 every task succeeded, 1 some did not, 130 interrupted."""
        ...

    @property
    def interrupted(self) -> bool:
        """Whether a stop ended the run before every task had ended."""
        ...

    @property
    def report(self) -> Report:
        """The run's report."""
        ...

    @property
    def tasks(self) -> Sequence[TaskSummary]:
        """The per-task table."""
        ...


class RunHandle(Protocol):
    """A view's hold on the run it shows: starting it (or joining it), and its end.

    Stop signals are the handle's: a view learns of one through `stop_signalled`
    (no one may be there to answer a question: leave once the run has ended).
    """

    @property
    def finished(self) -> bool:
        """Whether the run has ended (or its engine failed)."""
        ...

    @property
    def result(self) -> RunOutcome | None:
        """How the run ended, once it has (None if its engine failed)."""
        ...

    @property
    def failure(self) -> BaseException | None:
        """What stopped the engine, if it failed rather than ended (None if it was
        cancelled)."""
        ...

    @property
    def stopped_from_outside(self) -> bool:
        """Whether a signal (the terminal going away, a kill) asked the run to stop."""
        ...

    def start(
        self,
        *,
        on_finish: Callable[[], None] | None = None,
        on_stop_signal: Callable[[], None] | None = None,
    ) -> None:
        """Start the run on the running event loop; `on_finish` is called once it
        has ended, `on_stop_signal` on each stop signal."""
        ...

    async def wait(self) -> RunOutcome:
        """Wait for the run's end (raises what stopped its engine, if it failed)."""
        ...

    async def close(self) -> None:
        """Leave no work behind: stop what still runs at once, and wait for it."""
        ...


class WhatIfUnavailable(Exception):
    """No prediction could be had; the message says why. `learning`: none yet,
    because nothing says how long tasks take (no attempt has ended, no estimate)."""

    def __init__(self, message: str, *, learning: bool = False) -> None:
        super().__init__(message)
        self.learning = learning
