"""Tasks added to a running fleet: validated as the config's, appended to its DAG.

Pure (no I/O). `fleetdeck add` sends `[[tasks]]` tables; `extend_fleet` checks
them with the config's own checks (the schema, unknown agents and runners with
"did you mean", unknown dependencies, duplicate ids, cycles) against the fleet
as it is now, and builds the grown fleet. Added tasks come after the config's,
so every task keeps its DAG node. The journal keeps each added task's table in
its `task_added` event; `appended` rebuilds the grown fleet from those tables
(a resumed run, the report of a run read back).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from fleetdeck.config import (
    _ADAPTER,
    ConfigError,
    Fleet,
    Problem,
    TaskSpec,
    _schema_problems,
    _text_problems,
    prepare_fleet,
)
from fleetdeck.graph import build_dag
from fleetdeck.model import Event, EventKind

# `tasks[12].agent`: the index of a problem's task, to say it of the added ones.
_TASK_INDEX = re.compile(r"^tasks\[(\d+)\]")


def extend_fleet(fleet: Fleet, tables: object, *, source: str) -> Fleet:
    """`fleet` with the tasks of `tables` (a list of `[[tasks]]` tables) appended.

    Raises ConfigError with the config's messages, each at the added task's own
    index in `tables` (`tasks[0].agent: unknown agent 'claud' (did you mean
    'claude'?)...`); the fleet itself is never changed."""
    if not isinstance(tables, list) or not tables:
        raise ConfigError(source, [Problem("tasks", "no tasks: add at least one [[tasks]] table")])
    data = {"tasks": tables}
    raw = list(_text_problems(data))
    try:
        parsed = _ADAPTER.validate_python(data)
    except PydanticValidationError as exc:
        raise ConfigError(source, [*_schema_problems(exc), *raw]) from None
    if raw:
        raise ConfigError(source, raw)
    config = fleet.config
    first = len(config.tasks)
    grown = dataclasses.replace(config, tasks=config.tasks + parsed.tasks)
    try:
        return prepare_fleet(grown, source=fleet.source, base_dir=fleet.base_dir)
    except ConfigError as exc:
        raise ConfigError(
            source, [_renumbered(problem, first) for problem in exc.problems]
        ) from None


def _renumbered(problem: Problem, first: int) -> Problem:
    """A problem of the grown config said of the added task it names (`tasks[N]`
    of the fleet is `tasks[N - first]` of what was added)."""
    match = _TASK_INDEX.match(problem.path)
    if match is None or int(match.group(1)) < first:
        return problem
    index = int(match.group(1)) - first
    return Problem(f"tasks[{index}]{problem.path[match.end() :]}", problem.message)


def task_table(spec: TaskSpec) -> dict[str, Any]:
    """The `[[tasks]]` table of `spec` as JSON data (what `task_added` journals)."""
    defaults = {field.name: field.default for field in dataclasses.fields(TaskSpec)}
    table: dict[str, Any] = {}
    for name, default in defaults.items():
        value = getattr(spec, name)
        if name in ("id", "agent") or value != default:
            table[name] = list(value) if isinstance(value, tuple) else value
    return table


def added_tables(events: Iterable[Event]) -> list[dict[str, Any]]:
    """The tables of the tasks a run's events say were added, in order."""
    return [
        dict(spec)
        for event in events
        if event.kind is EventKind.TASK_ADDED and isinstance(spec := event.data.get("spec"), dict)
    ]


def appended(fleet: Fleet, tables: Sequence[Mapping[str, Any]]) -> tuple[Fleet, list[str]]:
    """`fleet` with the journaled tasks `tables` appended, and the ids of those
    left out: a task the config now defines itself (the config's definition
    wins: it is the user's latest word), or one that no longer fits it (its
    agent or a dependency gone from the config)."""
    skipped: list[str] = []
    known = set(fleet.dag.index)
    for table in tables:
        task_id = str(table.get("id"))
        if task_id in known:
            skipped.append(task_id)
            continue
        try:
            fleet = extend_fleet(fleet, [dict(table)], source="journal")
        except ConfigError:
            skipped.append(task_id)
            continue
        known.add(task_id)
    return fleet, skipped


def appended_trusted(fleet: Fleet, specs: Sequence[TaskSpec]) -> Fleet:
    """`fleet` with `specs` appended, already validated (no checks but the DAG's)."""
    config = dataclasses.replace(fleet.config, tasks=fleet.config.tasks + tuple(specs))
    dag = build_dag([t.id for t in config.tasks], [t.depends_on for t in config.tasks])
    return dataclasses.replace(fleet, config=config, dag=dag)
