"""Fleet configuration: the TOML schema, loading, validation and friendly errors.

The schema is a set of frozen dataclasses that pydantic validates directly
(types, ranges, unknown keys), so the file format and the runtime types are one
definition. Every problem becomes a `Problem` naming the key path
(`tasks[3].depends_on`) with a suggestion where one is near; `ConfigError` carries
all of them at once so a user fixes a file in one pass, not one error per run.
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

# tomli is tomllib's source compiled with mypyc: the same parser, messages and
# errors, twice as fast (0.2 s instead of 0.44 s for a 20,000-task config, measured
# here). tomllib stays the fallback, so a missing wheel costs only time.
try:
    import tomli as tomllib
except ImportError:  # pragma: no cover - tomli is a dependency
    import tomllib  # type: ignore[no-redef]

from pydantic import ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from fleetdeck.apispec import AgentKind, Price, UsageLimit, api_problems
from fleetdeck.graph import CycleError, Dag, build_dag
from fleetdeck.model import API_HOST, LOCAL_HOST
from fleetdeck.policy import Policy

# Keys in the file must be known: a typo must never pass silently.
_SCHEMA = ConfigDict(extra="forbid")

PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
# TOML integers are fine where seconds are expected; strings are not. TOML's `inf`
# is not: an infinite grace period would never SIGKILL what ignores SIGTERM.
Seconds = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
NonNegativeSeconds = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
# A policy's parameter: each policy checks its own (fleetdeck.policy.make_policy).
PolicyParameter = StrictBool | StrictInt | Annotated[float, Field(allow_inf_nan=False)] | StrictStr
# Placeholders of command templates; {python} is the interpreter running fleetdeck
# (so simulated agents run from a virtual environment that is not on PATH).
TEMPLATE_FIELDS: tuple[str, ...] = ("task", "prompt", "attempt", "workdir", "python")
TASK_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# How many problems one report lists before it says "and N more".
MAX_REPORTED_PROBLEMS = 50


@dataclass(slots=True, frozen=True)
class FleetSection:
    """`[fleet]`: the fleet as a whole."""

    __pydantic_config__ = _SCHEMA

    name: StrictStr = ""
    policy: Policy = "wave"
    max_in_flight: PositiveInt | None = None
    state_dir: StrictStr = ".fleetdeck"
    # SIGTERM, then this long, then SIGKILL for everything left of an attempt.
    grace_period: NonNegativeSeconds = 5.0
    # Retry backoff: base * 2**(failures - 1), capped, with jitter.
    retry_backoff: NonNegativeSeconds = 1.0
    retry_backoff_max: NonNegativeSeconds = 60.0
    # Cognitive-load capacity (README, "Cognitive load").
    load_capacity: PositiveInt = 7
    # Names of environment variables whose values are masked as *** in
    # everything fleetdeck records or shows (fleetdeck.redact).
    secrets: tuple[StrictStr, ...] = ()
    # Dollars the run may spend on API agents (their `price`); then no new launches.
    budget: NonNegativeSeconds | None = None
    # `fleetdeck run` on a terminal: "stop" runs the fleet in this process (losing
    # the terminal stops it cleanly, resumable); "detach" starts it in the
    # background and attaches the TUI (`d` or q detach; losing the terminal
    # leaves it running: fleetdeck.remote).
    on_hangup: Literal["stop", "detach"] = "stop"
    # When something needs the operator (a task failed, the run ended): a command
    # of theirs ("{message}" in its words is replaced), and a URL that gets a
    # Slack-compatible JSON post; each at most once a `notify_interval`, a burst
    # of failures being one message (fleetdeck.notify).
    notify: tuple[StrictStr, ...] = ()
    notify_url: StrictStr | None = None
    notify_interval: NonNegativeSeconds = 10.0


@dataclass(slots=True, frozen=True)
class HostSpec:
    """`[hosts.NAME]`: an SSH destination (used by the SSH executor)."""

    __pydantic_config__ = _SCHEMA

    address: StrictStr
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 22
    user: StrictStr | None = None
    identity: StrictStr | None = None
    known_hosts: StrictStr | None = None
    connect_timeout: Seconds = 10.0
    keepalive_interval: Seconds = 5.0
    keepalive_count: PositiveInt = 3
    max_sessions: PositiveInt = 10
    trust_unknown_host_key: StrictBool = False
    # A clone of the fleet's `[repo]` on this host: its agents work in a
    # worktree of it (absolute, or from the login's home with `~/`).
    repo: StrictStr | None = None


@dataclass(slots=True, frozen=True)
class WorkerSpec:
    """`[agents.NAME]` or `[runners.NAME]`: a command template with slots on hosts.

    Agents and runners have the same shape; what differs is the stage they run.
    `slots` apply per host. `estimate` and `fail_rate` are what `fleetdeck simulate`
    assumes of the stage it runs for tasks with no history (a task's own win).
    """

    __pydantic_config__ = _SCHEMA

    # Required for a process (fleetdeck.apispec checks it; an API agent has none).
    command: Annotated[tuple[StrictStr, ...], Field(min_length=1)] = ()
    slots: PositiveInt = 1
    host: StrictStr | None = None
    hosts: tuple[StrictStr, ...] | None = None
    env: Mapping[StrictStr, StrictStr] = field(default_factory=dict)
    workdir: StrictStr | None = None
    # Per-attempt timeout for this worker's attempts; a task's own timeout wins.
    timeout: Seconds | None = None
    estimate: Seconds | None = None
    fail_rate: Fraction | None = None
    # An API agent (fleetdeck.apispec): HTTP requests instead of a process.
    kind: AgentKind = "process"
    model: StrictStr | None = None
    base_url: StrictStr | None = None
    api_key_env: StrictStr | None = None
    system: StrictStr | None = None
    max_tokens: PositiveInt = 1024
    temperature: Annotated[float, Field(strict=True, ge=0, le=2, allow_inf_nan=False)] | None = None
    requests_per_minute: Seconds | None = None
    tokens_per_minute: PositiveInt | None = None
    price: Price | None = None
    budget: NonNegativeSeconds | None = None
    # A CLI agent: output that says it hit its provider's usage limit.
    usage_limit: UsageLimit | None = None
    # Where its tasks go when their attempts here are spent, it is over budget,
    # or throttled for longer than `fallback_after` seconds (fleetdeck.engine.reroute).
    fallback: StrictStr | None = None
    fallback_after: Seconds | None = None

    @property
    def host_names(self) -> tuple[str, ...]:
        """The hosts this worker runs on (`local` when none is named)."""
        if self.kind != "process":
            return (API_HOST,)
        if self.hosts:
            return self.hosts
        return (self.host or LOCAL_HOST,)


@dataclass(slots=True, frozen=True)
class TaskSpec:
    """One `[[tasks]]` entry. `estimate` and `fail_rate`: what `fleetdeck simulate`
    assumes of its agent stage when the journal has no history of it."""

    __pydantic_config__ = _SCHEMA

    id: StrictStr
    agent: StrictStr
    prompt: StrictStr = ""
    ci: StrictStr | None = None
    depends_on: tuple[StrictStr, ...] = ()
    retries: NonNegativeInt = 0
    timeout: Seconds | None = None
    priority: StrictInt = 0
    estimate: Seconds | None = None
    fail_rate: Fraction | None = None
    # With a `[repo]`: whether the task's change lands on the target (false:
    # verify only), and whether its retries go on in the same worktree.
    land: StrictBool = True
    keep_worktree: StrictBool = False
    # The agent this task goes to when its own gives up (before the agent's fallback).
    fallback: StrictStr | None = None
    # When it fails, its dependents still run (its input marked as missing).
    optional: StrictBool = False


@dataclass(slots=True, frozen=True)
class RepoSpec:
    """`[repo]`: the git repository the agents change, each task in a worktree of
    its own, its change landing on `target` (fleetdeck.workspace)."""

    __pydantic_config__ = _SCHEMA

    # Relative to the config file's directory.
    path: StrictStr = "."
    target: StrictStr = "main"
    land: Literal["rebase", "merge", "squash"] = "rebase"
    # Relative to the state directory unless absolute.
    worktrees: StrictStr = "worktrees"
    # Run in each new worktree before the agent (`npm ci`, say).
    setup: Annotated[tuple[StrictStr, ...], Field(min_length=1)] | None = None
    # Untracked files of the repository copied into each new worktree (`.env`).
    copy: tuple[StrictStr, ...] = ()
    # An agent stage that changed nothing: a failed attempt, or fine.
    empty: Literal["fail", "ok"] = "fail"


@dataclass(slots=True, frozen=True)
class FleetConfig:
    """The whole file, validated for types and keys (not yet for references)."""

    __pydantic_config__ = _SCHEMA

    fleet: FleetSection = field(default_factory=FleetSection)
    hosts: Mapping[StrictStr, HostSpec] = field(default_factory=dict)
    agents: Mapping[StrictStr, WorkerSpec] = field(default_factory=dict)
    runners: Mapping[StrictStr, WorkerSpec] = field(default_factory=dict)
    tasks: tuple[TaskSpec, ...] = ()
    repo: RepoSpec | None = None
    # `[policies.NAME]`: each policy's parameters, kept for whichever policy runs,
    # since the operator may switch to any of them during the run.
    policies: Mapping[Policy, Mapping[StrictStr, PolicyParameter]] = field(default_factory=dict)

    def policy_params(self, name: str) -> Mapping[str, PolicyParameter] | None:
        """The parameters `[policies.NAME]` gives policy `name` (None: none)."""
        return next((params for policy, params in self.policies.items() if policy == name), None)


_NO_PLUGINS = "PYDANTIC_DISABLE_PLUGINS"


def _build_adapter() -> TypeAdapter[FleetConfig]:
    """The validator and serializer of the whole file, built without pydantic's plugins.

    A plugin (logfire's, say) observes an application's own models, not a tool's
    config file. Looking them up reads the entry points of every installed package
    and imports each plugin found (logfire's imports its whole SDK), at every start,
    and a broken one prints a warning. pydantic reads PYDANTIC_DISABLE_PLUGINS while
    it builds a validator: it is set for that moment only, then put back as the user
    had it (attempts inherit the environment).
    """
    previous = os.environ.get(_NO_PLUGINS)
    os.environ[_NO_PLUGINS] = "__all__"
    try:
        return TypeAdapter(FleetConfig)
    finally:
        if previous is None:
            del os.environ[_NO_PLUGINS]
        else:
            os.environ[_NO_PLUGINS] = previous


_ADAPTER = _build_adapter()


@dataclass(slots=True, frozen=True)
class Problem:
    """One thing wrong with a config: where (`tasks[3].depends_on`) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """A config that cannot be used; `str()` is the message to print, one per line."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        """Every problem as `FILE: KEY.PATH: message`, capped at a readable number.

        Names quoted from the file may hold control characters (TOML allows any
        in quoted keys and strings): they are escaped, so that each problem stays
        on its one line and nothing in the file can drive the terminal.
        """
        shown = self.problems[:MAX_REPORTED_PROBLEMS]
        lines = [printable(f"{self.source}: {problem}") for problem in shown]
        hidden = len(self.problems) - len(shown)
        if hidden > 0:
            lines.append(f"{self.source}: ... and {hidden} more problems")
        return "\n".join(lines)


def printable(text: str) -> str:
    """`text` with every non-printable character escaped (`\\n`, `\\x1b`, `\\u2028`)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


@dataclass(slots=True, frozen=True)
class Fleet:
    """A validated fleet, ready to run: the config, where it came from, its DAG.

    `base_dir` is the directory relative paths in the config are resolved against
    (the config file's directory).
    """

    config: FleetConfig
    source: str
    base_dir: Path
    dag: Dag

    @property
    def name(self) -> str:
        """The fleet's name, or the config file's stem when it has none."""
        return self.config.fleet.name or Path(self.source).stem or "fleet"

    @property
    def state_dir(self) -> Path:
        """Where the journal and the attempt logs live."""
        return (self.base_dir / self.config.fleet.state_dir).resolve()

    @property
    def repo_path(self) -> Path | None:
        """The repository of `[repo]`, resolved (None without one)."""
        repo = self.config.repo
        return None if repo is None else (self.base_dir / repo.path).resolve()

    def worktrees_dir(self, state_dir: Path) -> Path | None:
        """Where task worktrees go for a run keeping its state in `state_dir`."""
        repo = self.config.repo
        return None if repo is None else (state_dir / repo.worktrees).resolve()

    def workdir(self, worker: WorkerSpec) -> Path:
        """The directory an attempt of `worker` runs in."""
        if worker.workdir is None:
            return self.base_dir.resolve()
        return (self.base_dir / worker.workdir).resolve()

    @property
    def tasks(self) -> tuple[TaskSpec, ...]:
        """The tasks in config order (node i of the DAG is task i)."""
        return self.config.tasks

    @property
    def secrets(self) -> tuple[str, ...]:
        """Names of the environment variables whose values are never shown or recorded:
        `[fleet] secrets`, and each API agent's `api_key_env`."""
        named = self.config.fleet.secrets
        keys = [a.api_key_env for a in self.config.agents.values() if a.api_key_env]
        return named + tuple(k for k in dict.fromkeys(keys) if k not in named)


def load_fleet(path: str | Path) -> Fleet:
    """Read, parse and validate the fleet at `path`. Raises ConfigError."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, [Problem("", "no such file")]) from None
    except IsADirectoryError:
        raise ConfigError(source, [Problem("", "is a directory, not a config file")]) from None
    except OSError as exc:
        raise ConfigError(source, [Problem("", f"cannot read: {exc.strerror}")]) from None
    try:
        # utf-8-sig: editors on some systems save a byte-order mark; it is not TOML.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (bad byte at offset {exc.start})"
        raise ConfigError(source, [Problem("", message)]) from None
    return parse_fleet(text, source=source, base_dir=Path(path).parent)


def parse_fleet(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> Fleet:
    """Parse and validate TOML text. Raises ConfigError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [Problem("", f"invalid TOML: {_toml_message(exc)}")]) from None
    except RecursionError:
        message = "invalid TOML: arrays or tables nested too deeply"
        raise ConfigError(source, [Problem("", message)]) from None
    return build_fleet(data, source=source, base_dir=base_dir or Path.cwd())


def build_fleet(data: Mapping[str, Any], *, source: str, base_dir: Path) -> Fleet:
    """Validate an already-parsed config (a dict as tomllib returns it)."""
    raw = list(_text_problems(data))
    try:
        config = _ADAPTER.validate_python(data)
    except PydanticValidationError as exc:
        problems = _schema_problems(exc)
        # Report broken references in the same pass, from the raw tables, except
        # where the schema already complained about that very key.
        flagged = {problem.path for problem in problems}
        problems += [
            problem
            for problem in [
                *raw,
                *_reference_problems(_RawShape(data), require_tasks=False),
                *_policy_problems(_table(data.get("policies"))),
            ]
            if problem.path not in flagged
        ]
        raise ConfigError(source, problems) from None
    if raw:
        raise ConfigError(source, [*raw, *_reference_problems(config)])
    return prepare_fleet(config, source=source, base_dir=base_dir)


def _text_problems(data: object, path: str = "") -> Iterator[Problem]:
    """Text no path, argument, environment variable or name can hold.

    A NUL character ends a string for the operating system (Python refuses to
    pass one on), and a variable name with `=` or none at all cannot be set.
    """
    if isinstance(data, str):
        if "\x00" in data:
            yield Problem(path, "must not contain a NUL character (\\x00)")
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from _text_problems(item, f"{path}[{index}]")
    elif isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                yield Problem(path, f"the key {key!r} must not contain a NUL character")
                continue
            yield from _text_problems(value, where)
    if path:
        return
    # Names are shown on every line of the headless view and on the TUI: a
    # newline or an escape sequence in one would forge lines or drive the terminal.
    name = _table(data.get("fleet")).get("name") if isinstance(data, dict) else None
    if isinstance(name, str) and not name.isprintable():
        yield Problem("fleet.name", f"{name!r} has control characters; use printable text")
    for section in ("hosts", "agents", "runners"):
        for key in _table(_table(data).get(section)):
            if not key.isprintable():
                yield Problem(
                    section, f"the name {key!r} has control characters; use printable text"
                )
    for section in ("agents", "runners"):
        for name, worker in _table(_table(data).get(section)).items():
            env = _table(worker).get("env")
            for variable in _table(env):
                if not variable or "=" in variable:
                    yield Problem(
                        f"{section}.{name}.env",
                        f"bad variable name {variable!r}: it must be non-empty, without '='",
                    )


def prepare_fleet(config: FleetConfig, *, source: str, base_dir: Path) -> Fleet:
    """Check references and the graph of a schema-valid config; build its DAG.

    This is also the entry point for fleets built in code (benchmarks, tests).
    """
    problems = list(_reference_problems(config))
    problems += _secret_problems(config.fleet.secrets)
    problems += api_problems(config)
    problems += _policy_problems({str(name): params for name, params in config.policies.items()})
    ids = [task.id for task in config.tasks]
    if problems:
        # A broken reference (a task that depends on itself, say) must not hide a
        # cycle among the sound ones: the user would fix one to meet the other.
        if len(set(ids)) == len(ids):
            known = set(ids)
            sound = [
                tuple(dict.fromkeys(d for d in task.depends_on if d in known and d != task.id))
                for task in config.tasks
            ]
            try:
                build_dag(ids, sound)
            except CycleError as exc:
                problems.append(_cycle_problem(ids, exc))
        raise ConfigError(source, problems)
    try:
        dag = build_dag(ids, [task.depends_on for task in config.tasks])
    except CycleError as exc:
        raise ConfigError(source, [_cycle_problem(ids, exc)]) from None
    return Fleet(config=config, source=source, base_dir=base_dir, dag=dag)


def _cycle_problem(ids: Sequence[str], exc: CycleError) -> Problem:
    """The cycle `exc` found, reported at the first task of it."""
    first = ids.index(exc.cycle[0])
    return Problem(f"tasks[{first}].depends_on", f"dependency cycle: {' -> '.join(exc.cycle)}")


def _policy_problems(policies: Mapping[str, Any]) -> list[Problem]:
    """Each known policy's parameters, as that policy takes them (an unknown
    policy name, or a table that is not one, is the schema's to report)."""
    from fleetdeck.policy import POLICY_NAMES, make_policy

    problems: list[Problem] = []
    for name, params in policies.items():
        if name not in POLICY_NAMES or not isinstance(params, Mapping):
            continue
        try:
            make_policy(name, params)
        except ValueError as exc:
            problems.append(Problem(f"policies.{name}", str(exc)))
    return problems


VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _secret_problems(names: Sequence[str]) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not VARIABLE_NAME.fullmatch(name):
            problems.append(
                Problem(
                    f"fleet.secrets[{i}]",
                    f"{name!r} is not an environment variable name "
                    "(letters, digits and '_', not starting with a digit)",
                )
            )
        elif name in seen:
            problems.append(Problem(f"fleet.secrets[{i}]", f"'{name}' is listed twice"))
        seen.add(name)
    return problems


def suggest(name: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the nearest candidate, or an empty string."""
    pool = list(candidates)
    matches = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


# The dialect pydantic writes; editors (taplo, VS Code) pick their validator by it.
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The config format as JSON Schema, for editors (`fleetdeck schema`)."""
    return {"$schema": JSON_SCHEMA_DIALECT, **_ADAPTER.json_schema()}


# --- schema errors -------------------------------------------------------------------


def _schema_problems(exc: PydanticValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        kind = error["type"]
        value = error.get("input")
        if kind in ("unexpected_keyword_argument", "extra_forbidden"):
            key = str(loc[-1])
            known = _known_keys(loc[:-1])
            where = _key_path(loc[:-1])
            message = f"unknown key '{key}'{suggest(key, known)}"
            if known:
                message += f"; valid keys: {', '.join(known)}"
            problems.append(Problem(where, message))
        elif kind == "missing":
            problems.append(Problem(_key_path(loc[:-1]), f"missing required key '{loc[-1]}'"))
        else:
            problems.append(Problem(_key_path(loc), _describe(kind, error, value)))
    return problems


def _describe(kind: str, error: Any, value: Any) -> str:
    ctx = error.get("ctx") or {}
    shown = _show(value)
    if kind == "literal_error":
        allowed = [
            a.strip("'") for a in str(ctx.get("expected", "")).replace(" or ", ", ").split(", ")
        ]
        hint = suggest(str(value), allowed) if isinstance(value, str) else ""
        return f"must be one of {', '.join(repr(a) for a in allowed)}, got {shown}{hint}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {shown}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number of seconds, got {shown}"
    if kind in ("string_type",):
        return f"expected a string, got {shown}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {shown}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {shown}"
    if kind in ("dict_type", "mapping_type", "dataclass_type", "model_type"):
        return f"expected a table, got {shown}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {shown}"
    if kind == "greater_than":
        return f"must be more than {ctx.get('gt')}, got {shown}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {shown}"
    if kind == "finite_number":
        return f"must be a finite number of seconds, got {shown}"
    if kind == "too_short":
        return "must not be empty"
    return f"{error.get('msg', 'invalid value')}, got {shown}"


def _show(value: Any) -> str:
    if isinstance(value, datetime.date | datetime.time):
        return f"the date/time {value.isoformat()}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key_path(loc: Sequence[Any]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":
            continue  # pydantic's mark for a bad key of a table: the key is in the path
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


# Which dataclass describes the table at each top-level section; the section's
# own key (an agent's name) is skipped for the mapping sections.
_SECTIONS: dict[str, tuple[type, bool]] = {
    "fleet": (FleetSection, False),
    "hosts": (HostSpec, True),
    "agents": (WorkerSpec, True),
    "runners": (WorkerSpec, True),
    "tasks": (TaskSpec, True),
    "repo": (RepoSpec, False),
}


def _known_keys(loc: Sequence[Any]) -> list[str]:
    if not loc:
        return [f.name for f in fields(FleetConfig)]
    section = _SECTIONS.get(str(loc[0]))
    if section is None:
        return []
    schema, keyed = section
    depth = 2 if keyed else 1
    if len(loc) != depth or not is_dataclass(schema):
        return []
    return [f.name for f in fields(schema)]


def _toml_message(exc: tomllib.TOMLDecodeError) -> str:
    # tomllib says "... (at line 3, column 7)"; keep its words, they are good.
    return str(exc)


# --- references and graph --------------------------------------------------------------


class _TaskLike(Protocol):
    """What the reference checks read of a task (a TaskSpec, or a raw table)."""

    @property
    def id(self) -> str | None: ...
    @property
    def agent(self) -> str | None: ...
    @property
    def ci(self) -> str | None: ...
    @property
    def depends_on(self) -> Sequence[str]: ...


class _WorkerLike(Protocol):
    """What the reference checks read of an agent or runner."""

    @property
    def host(self) -> str | None: ...
    @property
    def hosts(self) -> Sequence[str] | None: ...
    @property
    def command(self) -> Sequence[str]: ...


class _ShapeLike(Protocol):
    """What the reference checks read of a whole config."""

    @property
    def hosts(self) -> Mapping[str, object]: ...
    @property
    def agents(self) -> Mapping[str, _WorkerLike]: ...
    @property
    def runners(self) -> Mapping[str, _WorkerLike]: ...
    @property
    def tasks(self) -> Sequence[_TaskLike]: ...


@dataclass(slots=True, frozen=True)
class _RawTask:
    id: str | None
    agent: str | None
    ci: str | None
    depends_on: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class _RawWorker:
    host: str | None
    hosts: tuple[str, ...] | None
    command: tuple[str, ...]


class _RawShape:
    """The names and references of a config that failed schema validation.

    Only values of the right type are kept; the schema errors already say what
    is wrong with the rest.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.hosts = _table(data.get("hosts"))
        self.repo = data.get("repo")
        self.agents = {name: _raw_worker(spec) for name, spec in _table(data.get("agents")).items()}
        self.runners = {
            name: _raw_worker(spec) for name, spec in _table(data.get("runners")).items()
        }
        raw_tasks = data.get("tasks")
        self.tasks = [
            _raw_task(task) for task in (raw_tasks if isinstance(raw_tasks, list) else [])
        ]


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _texts(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def _raw_worker(spec: object) -> _RawWorker:
    table = _table(spec)
    hosts = table.get("hosts")
    return _RawWorker(
        host=_text(table.get("host")),
        hosts=_texts(hosts) if isinstance(hosts, list) else None,
        command=_texts(table.get("command")),
    )


def _raw_task(task: object) -> _RawTask:
    table = _table(task)
    return _RawTask(
        id=_text(table.get("id")),
        agent=_text(table.get("agent")),
        ci=_text(table.get("ci")),
        depends_on=_texts(table.get("depends_on")),
    )


def _reference_problems(config: _ShapeLike, *, require_tasks: bool = True) -> Iterable[Problem]:
    # After schema errors the task list may be missing only because it is
    # misspelt ([[task]]), which the schema errors already say.
    if require_tasks and not config.tasks:
        yield Problem("tasks", "no tasks: add at least one [[tasks]] table")
    if LOCAL_HOST in config.hosts:
        yield Problem(f"hosts.{LOCAL_HOST}", f"'{LOCAL_HOST}' is built in and cannot be redefined")
    host_names = [LOCAL_HOST, *config.hosts]
    for section, workers in (("agents", config.agents), ("runners", config.runners)):
        for name, worker in workers.items():
            yield from _worker_problems(f"{section}.{name}", worker, host_names)
    yield from _task_problems(config)
    yield from _host_repo_problems(config)


def _host_repo_problems(config: _ShapeLike) -> Iterable[Problem]:
    """A host's `repo` is a clone of the fleet's `[repo]`: there must be one."""
    fleet_repo = getattr(config, "repo", None)
    for name, host in config.hosts.items():
        path = host.get("repo") if isinstance(host, dict) else getattr(host, "repo", None)
        if not isinstance(path, str):
            continue
        if fleet_repo is None:
            yield Problem(
                f"hosts.{name}.repo",
                "needs a [repo] in the fleet (the repository its tasks' changes land on)",
            )
        elif not (path.startswith("/") or path.startswith("~/")):
            yield Problem(
                f"hosts.{name}.repo", f"{path!r} must be absolute on the host (or start with ~/)"
            )


def _worker_problems(where: str, worker: _WorkerLike, host_names: list[str]) -> Iterable[Problem]:
    if worker.host is not None and worker.hosts is not None:
        yield Problem(where, "give either 'host' or 'hosts', not both")
    if worker.hosts is not None and not worker.hosts:
        yield Problem(f"{where}.hosts", "must not be empty")
    named = worker.hosts if worker.hosts is not None else (worker.host,)
    key = "hosts" if worker.hosts is not None else "host"
    seen: set[str] = set()
    for host in named:
        if host is None:
            continue
        if host not in host_names:
            hint = suggest(host, host_names)
            yield Problem(
                f"{where}.{key}", f"unknown host '{host}'{hint}; define it as [hosts.{host}]"
            )
        if host in seen:
            yield Problem(f"{where}.{key}", f"host '{host}' is named twice")
        seen.add(host)
    for i, arg in enumerate(worker.command):
        problem = template_problem(arg)
        if problem:
            yield Problem(f"{where}.command[{i}]", problem)


def template_problem(arg: str) -> str | None:
    """What is wrong with one argv template element, or None when it is fine."""
    try:
        parsed = list(string.Formatter().parse(arg))
    except ValueError as exc:
        return f"bad template {arg!r}: {exc} (write {{{{ and }}}} for literal braces)"
    allowed = ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS)
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            return (
                f"{{{name}}} in {arg!r} is not a placeholder; write {{{{ and }}}} "
                f"for literal braces (placeholders are {allowed})"
            )
        if name not in TEMPLATE_FIELDS:
            matches = difflib.get_close_matches(name, TEMPLATE_FIELDS, n=1, cutoff=0.6)
            hint = f" (did you mean '{{{matches[0]}}}'?)" if matches else ""
            shown = "{" + name + "}"
            return f"unknown placeholder {shown}{hint}; placeholders are {allowed}"
        if spec or conversion:
            return f"placeholder {{{name}}} takes no format spec or conversion in {arg!r}"
    return None


def _task_problems(config: _ShapeLike) -> Iterable[Problem]:
    first_seen: dict[str, int] = {}
    for i, task in enumerate(config.tasks):
        if task.id is None:
            continue  # a schema problem already
        if not TASK_ID_PATTERN.fullmatch(task.id):
            yield Problem(
                f"tasks[{i}].id",
                f"bad task id {task.id!r}: use letters, digits, '.', '_' and '-' "
                "(starting with a letter or digit, at most 100 characters)",
            )
        if task.id in first_seen:
            yield Problem(
                f"tasks[{i}].id",
                f"duplicate task id '{task.id}' (first used by tasks[{first_seen[task.id]}])",
            )
        else:
            first_seen[task.id] = i

    agent_names = list(config.agents)
    runner_names = list(config.runners)
    # Suggestions scan every task id; past a few dozen, a broken file of 20,000
    # tasks would take seconds to report, so later unknown names get none.
    suggestions_left = MAX_REPORTED_PROBLEMS
    for i, task in enumerate(config.tasks):
        where = f"tasks[{i}]"
        if task.agent is not None and task.agent not in config.agents:
            hint = suggest(task.agent, agent_names)
            defined = f"; defined agents: {', '.join(agent_names)}" if agent_names else ""
            yield Problem(f"{where}.agent", f"unknown agent '{task.agent}'{hint}{defined}")
        if task.ci is not None and task.ci not in config.runners:
            hint = suggest(task.ci, runner_names)
            defined = f"; defined runners: {', '.join(runner_names)}" if runner_names else ""
            yield Problem(f"{where}.ci", f"unknown runner '{task.ci}'{hint}{defined}")
        seen: set[str] = set()
        for dep in task.depends_on:
            if dep == task.id:
                yield Problem(f"{where}.depends_on", f"task '{task.id}' depends on itself")
            elif dep not in first_seen:
                hint = suggest(dep, first_seen) if suggestions_left > 0 else ""
                suggestions_left -= 1
                yield Problem(
                    f"{where}.depends_on",
                    f"task '{task.id}' depends on unknown task '{dep}'{hint}",
                )
            elif dep in seen:
                yield Problem(f"{where}.depends_on", f"'{dep}' is listed twice")
            seen.add(dep)


def config_json(config: FleetConfig) -> str:
    """The validated config as JSON (the journal keeps it to rebuild reports)."""
    if all(agent.command for agent in config.agents.values()):
        return _ADAPTER.dump_json(config).decode()
    # An API agent has no command: its `[]` would not validate when read back.
    data = _ADAPTER.dump_python(config, mode="json")
    for agent in data["agents"].values():
        if not agent["command"]:
            del agent["command"]
    return json.dumps(data)
