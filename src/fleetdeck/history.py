"""What a fleet's tasks did before, read from its journal: the simulator's inputs.

Per task and stage, the durations of the attempts that ended on their own
(succeeded, failed or timed out) over every run of the journal, and so how often
they failed. Cancelled and lost attempts say nothing of the task (the operator
or a host ended them) and are left out. Reading never writes, as with
`fleetdeck report`: a journal nobody has open is read `immutable` (read-only mode
would create its -wal and -shm files), one in use in read-only mode beside its
supervisor.

`stage_models` turns that history and the config into what the simulator draws
from: the history where there is some, else the `estimate` and `fail_rate` of the
task or of its agent or runner, else what was observed of other tasks (see
`Fallbacks`), and only with nothing observed at all a built-in default.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from fleetdeck.config import Fleet, WorkerSpec
from fleetdeck.engine.simulate import StageModel
from fleetdeck.journal import DB_NAME, read_learned_durations
from fleetdeck.model import Outcome, Stage
from fleetdeck.stages import pipeline, worker_of, workers

# What a stage is taken to last with no history, no estimate and no attempt of any
# task observed at all: agents code for a while, CI runs a suite.
DEFAULT_SECONDS = {Stage.AGENT: 60.0, Stage.CI: 30.0, Stage.MERGE: 1.0}
_ENDED_ON_THEIR_OWN = (Outcome.OK, Outcome.FAILED, Outcome.TIMEOUT)


class HistoryError(Exception):
    """The journal cannot be read; the message (one line) says where and why."""


@dataclass(slots=True, frozen=True)
class Observed:
    """The attempts of one stage of one task that ended on their own."""

    ok: tuple[float, ...] = ()
    failed: tuple[float, ...] = ()

    @property
    def typical(self) -> tuple[float, ...]:
        """The durations that stand for the stage in a mean: the successful ones,
        or the failed ones when none succeeded."""
        return self.ok or self.failed

    @property
    def fail_rate(self) -> float:
        """The fraction of those attempts that failed (or timed out)."""
        total = len(self.ok) + len(self.failed)
        return len(self.failed) / total if total else 0.0

    def model(self) -> StageModel:
        """Draw among the observed durations, failing as often as observed."""
        return StageModel(
            ok=self.ok or self.failed, failed=self.failed or self.ok, fail_rate=self.fail_rate
        )


@dataclass(slots=True, frozen=True)
class History:
    """What the journal knows of each task: `observed[(task, stage)]`, and the
    durations the engine itself learns from it to rank ready tasks."""

    observed: Mapping[tuple[str, Stage], Observed] = field(default_factory=dict)
    learned: Mapping[str, float] = field(default_factory=dict)
    runs: int = 0
    source: Path | None = None

    @property
    def attempts(self) -> int:
        """Attempts observed over every task and stage."""
        return sum(len(seen.ok) + len(seen.failed) for seen in self.observed.values())


@dataclass(slots=True, frozen=True)
class Fallbacks:
    """How long a stage of a task with no history and no estimate is taken to last.

    In order: the mean over the other tasks of that stage kind's observed
    durations (each task's `Observed.typical` mean counts once); if no task ran
    that kind of stage yet (a first run whose CI has not ended), the mean of every
    observed attempt of any stage (a fleet whose agents take 2 s does not have a
    30 s CI); only with nothing observed at all, `DEFAULT_SECONDS`.
    """

    by_kind: Mapping[Stage, float]
    overall: float | None

    @classmethod
    def of(cls, history: History) -> Fallbacks:
        """The fallbacks that `history` gives."""
        per_task: dict[Stage, list[float]] = {}
        pooled: list[float] = []
        for (_task, kind), seen in history.observed.items():
            durations = seen.typical
            if durations:
                per_task.setdefault(kind, []).append(sum(durations) / len(durations))
                pooled.extend(durations)
        by_kind = {kind: sum(means) / len(means) for kind, means in per_task.items()}
        return cls(by_kind, sum(pooled) / len(pooled) if pooled else None)

    def seconds(self, stage: Stage) -> float:
        """The fallback duration of `stage`."""
        known = self.by_kind.get(stage, self.overall)
        return DEFAULT_SECONDS[stage] if known is None else known

    def builtin(self, stage: Stage) -> bool:
        """True when `stage` falls back to the built-in default (nothing observed)."""
        return stage not in self.by_kind and self.overall is None


@dataclass(slots=True, frozen=True)
class Models:
    """Per DAG node, what each of its stages does; which tasks had no history in
    any stage (`estimated`: by their own or their worker's estimate; `defaulted`:
    some stage had neither, and took a fallback); and the stage kinds that some
    task took at a built-in default (`builtin`: nothing observed, no estimate)."""

    stages: list[dict[Stage, StageModel]]
    estimated: list[str]
    defaulted: list[str]
    builtin: frozenset[Stage] = frozenset()


def read_history(state_dir: str | Path) -> History:
    """The history in the journal of `state_dir` (read only). Raises HistoryError."""
    directory = Path(state_dir)
    if not directory.is_dir():
        what = "not a directory" if directory.exists() else "no such directory"
        raise HistoryError(f"{directory}: {what}")
    path = directory / DB_NAME
    if not path.is_file():
        raise HistoryError(f"{directory}: not a fleetdeck state directory (no {DB_NAME})")
    # A journal nobody has open has no -wal file: read it without creating one.
    mode = "mode=ro" if path.with_name(DB_NAME + "-wal").exists() else "immutable=1"
    try:
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{mode}", uri=True)
    except sqlite3.Error as exc:
        raise HistoryError(f"{path}: cannot open the journal: {_one_line(exc)}") from None
    try:
        rows = db.execute(
            "SELECT task, stage, outcome, finished_at - started_at FROM attempts"
            " WHERE finished_at IS NOT NULL AND started_at IS NOT NULL ORDER BY attempt_id"
        ).fetchall()
        runs = int(db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        learned = read_learned_durations(db)
    except sqlite3.Error as exc:
        raise HistoryError(f"{path}: cannot read the journal: {_one_line(exc)}") from None
    finally:
        db.close()
    history = history_of(rows)
    return History(history.observed, learned, runs, directory)


def history_of(rows: Sequence[tuple[str, str, str | None, float]]) -> History:
    """A history from attempt rows (task, stage, outcome, seconds)."""
    ok: dict[tuple[str, Stage], list[float]] = {}
    failed: dict[tuple[str, Stage], list[float]] = {}
    stages = {str(stage): stage for stage in Stage}
    for task, stage_name, outcome, seconds in rows:
        stage = stages.get(stage_name)
        if stage is None or outcome not in _ENDED_ON_THEIR_OWN:
            continue
        into = ok if outcome == Outcome.OK else failed
        into.setdefault((task, stage), []).append(max(0.0, float(seconds)))
    observed = {
        key: Observed(tuple(ok.get(key, ())), tuple(failed.get(key, ()))) for key in {*ok, *failed}
    }
    learned: dict[str, float] = {}
    for (task, _stage), durations in ok.items():
        learned[task] = learned.get(task, 0.0) + sum(durations) / len(durations)
    return History(observed=observed, learned=learned)


def stage_models(fleet: Fleet, history: History) -> Models:
    """What each stage of each task does in a simulation of `fleet`.

    With history for the stage (even if every attempt failed: their durations,
    failing as often as they did), the history. Without, the task's own
    `estimate` and `fail_rate` for its agent stage, else its agent's or runner's;
    with no estimate at all, a `Fallbacks` duration, never failing. A task with
    history in some stage is not listed as without history: a stage it never
    reached (its agent always failed) still takes an estimate or a fallback.
    """
    config = fleet.config
    fallbacks = Fallbacks.of(history)
    stages: list[dict[Stage, StageModel]] = []
    estimated: list[str] = []
    defaulted: list[str] = []
    builtin: set[Stage] = set()
    for spec in fleet.tasks:
        models: dict[Stage, StageModel] = {}
        known = False
        defaults = False
        for stage in pipeline(spec, config):
            seen = history.observed.get((spec.id, stage))
            if seen is not None:
                known = True
                models[stage] = seen.model()
                continue
            name = worker_of(spec, stage)
            worker: WorkerSpec | None = None if name is None else workers(config, stage)[name]
            estimate = worker.estimate if worker is not None else None
            fail_rate = worker.fail_rate if worker is not None else None
            if stage is Stage.AGENT:
                estimate = spec.estimate if spec.estimate is not None else estimate
                fail_rate = spec.fail_rate if spec.fail_rate is not None else fail_rate
            if estimate is None:
                defaults = True
                estimate = fallbacks.seconds(stage)
                if fallbacks.builtin(stage):
                    builtin.add(stage)
            models[stage] = StageModel.fixed(estimate, fail_rate or 0.0)
        if not known:
            (defaulted if defaults else estimated).append(spec.id)
        stages.append(models)
    return Models(stages, estimated, defaulted, frozenset(builtin))


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
