"""The live what-if's predictions, in a process of their own.

`fleetdeck.lab.predict_remaining` simulates the work left under each policy. At
10,000 tasks that is about two seconds of Python per prediction: in a thread of
the TUI's process it held the interpreter lock the event loop needs, and key
presses waited for it (the UI benchmark's p95 doubled). In a process of its own
it takes nothing from the loop but a pipe's worth of progress each time.

`PredictionProcess` is the TUI's end: it starts the process on its first
prediction (the fleet is pickled to it once), sends it the progress per task
and hands back each answer. `main` and `serve` are the process's end. No
Textual and no asyncio here: the view waits for the pipe its own way.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from fleetdeck.config import Fleet
from fleetdeck.engine.simulate import TaskProgress
from fleetdeck.history import History, HistoryError, read_history, stage_models
from fleetdeck.lab import predict_remaining
from fleetdeck.model import Stage, TaskState
from fleetdeck.policy import POLICIES
from fleetdeck.stages import pipeline

# Simulated runs per policy (their median is shown).
RUNS = 5
# The journal's history is read again this often: the run's own attempts add to it.
HISTORY_SECONDS = 30.0
# While the journal knows no attempt of some stage kind, it is read again this often
# (a first run).
EARLY_HISTORY_SECONDS = 3.0
# ...but never more often than this many times what a reading takes.
READ_PACE = 10.0
# How long closing waits for the process to go after it was killed.
CLOSE_SECONDS = 2.0

# Progress as it crosses the pipe: (task, state, attempts, failures, elapsed,
# retry_in) per task, plain values (a fifth of the pickle of TaskProgress objects).
Packed = tuple[tuple[str, str, int, int, float, float], ...]


def pack(progress: Mapping[str, TaskProgress]) -> Packed:
    """Progress per task as plain tuples, to send."""
    return tuple(
        (task, p.state.value, p.attempts, p.failures, p.elapsed, p.retry_in)
        for task, p in progress.items()
    )


def unpack(packed: Packed) -> dict[str, TaskProgress]:
    """Progress per task back from `pack`."""
    return {
        task: TaskProgress(TaskState(state), attempts, failures, elapsed, retry_in)
        for task, state, attempts, failures, elapsed, retry_in in packed
    }


class Predictor:
    """Predictions for one fleet: the journal's history (read again now and then),
    and the simulations."""

    def __init__(
        self,
        fleet: Fleet,
        state_dir: Path,
        *,
        policies: Sequence[str] = tuple(POLICIES),
        runs: int = RUNS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet = fleet
        self.state_dir = state_dir
        self.policies = tuple(policies)
        self.runs = runs
        self._monotonic = monotonic
        self._history: History | None = None
        self._read_at = 0.0
        self._read_took = 0.0
        # The stage kinds the fleet's tasks run, found on first need.
        self._kinds: frozenset[Stage] | None = None

    def history(self) -> History:
        """The journal's history; none (estimates and defaults) if it cannot be read.

        Read again once it is HISTORY_SECONDS old, or sooner while some stage
        kind the fleet uses has no attempt observed (a first run learns from its
        own first attempts, and its CI ends later than its first agents), but
        never more often than its reading takes, times READ_PACE."""
        now = self._monotonic()
        age = now - self._read_at
        stale = age >= HISTORY_SECONDS or (
            self._history is not None
            and not self._observed_every_kind(self._history)
            and age >= max(EARLY_HISTORY_SECONDS, READ_PACE * self._read_took)
        )
        if self._history is None or stale:
            try:
                self._history = read_history(self.state_dir)
            except HistoryError:
                self._history = History()
            self._read_at = self._monotonic()
            self._read_took = self._read_at - now
        return self._history

    def _observed_every_kind(self, history: History) -> bool:
        if self._kinds is None:
            config = self.fleet.config
            self._kinds = frozenset(
                stage for spec in self.fleet.tasks for stage in pipeline(spec, config)
            )
        return self._kinds <= {stage for _task, stage in history.observed}

    def has_basis(self, history: History) -> bool:
        """True when the predictions rest on something for every stage kind the
        fleet uses (agent, CI, merge): for each, every task's stage of that kind has
        its own history or an `estimate` (the task's or its worker's), or falls
        back to what was observed (that kind's mean over the other tasks, else the
        mean of every observed attempt of any stage). False when some stage would
        take its built-in default: that is a guess, not a figure to show."""
        return not stage_models(self.fleet, history).builtin

    def predict(self, progress: Mapping[str, TaskProgress]) -> dict[str, float]:
        """Seconds the work left takes under each policy (median over the runs).
        Raises NoBasis without a basis (`has_basis`): the built-in defaults
        would be a guess shown as a figure."""
        history = self.history()
        models = stage_models(self.fleet, history)
        if models.builtin:
            raise NoBasis("learning: no attempt has ended yet, and no estimate in the config")
        return predict_remaining(
            self.fleet, progress, history, self.policies, self.runs, models=models
        )


def serve(requests: Connection, replies: Connection) -> None:
    """The process's loop: a Predictor first, then progress in, ('ok', seconds per
    policy) or ('error', why) out, until the pipe closes."""
    try:
        predictor = requests.recv()
    except (EOFError, OSError):
        return
    while True:
        try:
            packed = requests.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, object] = ("ok", predictor.predict(unpack(packed)))
        except NoBasis as exc:
            reply = ("none", str(exc))
        except Exception as exc:  # a bug: said to the view, the process goes on
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            replies.send(reply)
        except OSError:
            return


def main() -> None:
    """The process's entry point: requests on stdin, replies on a copy of stdout,
    and stdout itself pointed at nothing (a stray print must not break the pipe)."""
    replies = Connection(os.dup(1))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    serve(Connection(0), replies)


class PredictionError(Exception):
    """The prediction process failed or went away; the message says how."""


class NoBasis(PredictionError):
    """Nothing yet says how long the tasks take: no figure is worth showing."""


class PredictionProcess:
    """The TUI's end of the prediction process: one prediction at a time.

    A plain child interpreter with pipes for stdin and stdout, rather than
    multiprocessing: under Textual, sys.stderr is a capture with no file
    descriptor, and multiprocessing's helper process wants one; and the child's
    stderr goes nowhere, so nothing it could say lands on the operator's screen."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None

    def send(self, progress: Mapping[str, TaskProgress]) -> None:
        """Ask for a prediction (the process starts on the first, and is sent the
        predictor). Raises PredictionError if it cannot be asked."""
        try:
            if self._process is None:
                process = subprocess.Popen(
                    [sys.executable, "-c", "from fleetdeck.whatif import main; main()"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    close_fds=True,
                )
                assert process.stdin is not None and process.stdout is not None
                self._process = process
                self._requests = Connection(os.dup(process.stdin.fileno()))
                self._replies = Connection(os.dup(process.stdout.fileno()))
                process.stdin.close()
                process.stdout.close()
                self._requests.send(self.predictor)
            assert self._requests is not None
            self._requests.send(pack(progress))
        except (OSError, ValueError) as exc:  # ValueError: closed meanwhile
            raise PredictionError(f"the what-if process went away: {exc}") from None

    def fileno(self) -> int:
        """The pipe to wait on for the answer (after `send`)."""
        assert self._replies is not None
        return self._replies.fileno()

    def receive(self) -> dict[str, float]:
        """The answer to the last `send` (ready once `fileno` is readable). Raises
        PredictionError if the prediction failed or the process went away."""
        try:
            assert self._replies is not None
            status, value = self._replies.recv()
        except (EOFError, OSError, ValueError):
            raise PredictionError("the what-if process went away") from None
        if status == "none":
            raise NoBasis(str(value))
        if status != "ok":
            raise PredictionError(str(value))
        assert isinstance(value, dict)
        return value

    @property
    def pid(self) -> int | None:
        """The process's id while it runs (None before the first prediction)."""
        return None if self._process is None else self._process.pid

    def close(self) -> None:
        """End the process at once (a prediction under way is not waited for)."""
        process, requests, replies = self._process, self._requests, self._replies
        self._process = self._requests = self._replies = None
        for conn in (requests, replies):
            if conn is not None:
                conn.close()
        if process is not None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(CLOSE_SECONDS)
