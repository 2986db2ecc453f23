"""Fuzzing `fleetdeck validate FILE`: whatever the file holds, a verdict, never a crash.

Three kinds of files: fleets shaped like the real schema (its sections and keys)
with plausible, mistyped or absurd values; the demo fleet with random edits; and
arbitrary text and bytes. For every one, `fleetdeck validate` (the CLI's `main`, in
process) must either accept it (exit 0, one `FILE: ok: ...` line) or reject it
(exit 2, every stderr line `FILE: ...`), and must never raise. A fleet it accepts
must also be usable by `run` up to its first launch: its paths resolve.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetdeck.cli import main
from fleetdeck.config import FleetSection, HostSpec, TaskSpec, WorkerSpec, load_fleet

DEMO = (Path(__file__).parent.parent / "config" / "demo.toml").read_text()
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def validate(content: str | bytes) -> tuple[int, str, str, Path]:
    """`fleetdeck validate` on a file holding `content`: exit code, stdout, stderr."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fleet.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["validate", str(path)])
        if code == 0:
            # Accepted: what `run` computes before its first launch must work too.
            fleet = load_fleet(path)
            assert fleet.state_dir.is_absolute()
            workers = [*fleet.config.agents.values(), *fleet.config.runners.values()]
            for worker in workers:
                assert fleet.workdir(worker).is_absolute()
    return code, out.getvalue(), err.getvalue(), path


def check_verdict(content: str | bytes) -> None:
    code, out, err, path = validate(content)
    assert "Traceback" not in out + err
    if code == 0:
        # Accepted, with warnings maybe (a program not on PATH here, no prompt).
        for line in err.splitlines():
            assert line.startswith(f"{path}: ") and ": warning: " in line, line
        assert out.startswith(f"{path}: ok: ") and out.count("\n") == 1, out
        return
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.splitlines()
    assert lines, "a rejected config must say why"
    for line in lines:
        assert line.startswith(f"{path}: ") and len(line) > len(f"{path}: "), line
    # One line per problem: a message never spills onto a line of its own.
    assert err.endswith("\n") and "\r" not in err


# --- values ---------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "coder", "ci", "local", "box", "", "a b", "ü", "x" * 120])
TEMPLATES = st.sampled_from(
    ["echo", "{prompt}", "{task}", "{attempt}", "{workdir}", "{python}", "{bad}", "{", "}", "{{"]
)
SCALARS = st.one_of(
    st.text(max_size=12),
    st.integers(),
    st.integers(min_value=-3, max_value=3),
    st.floats(),
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
)
# Text made of the characters that trouble paths, argv, environments and terminals.
ODD_TEXT = st.text(
    alphabet=st.sampled_from(["\x00", "\n", "\x1b", "=", " ", "a", "/", ".", "~", "{", "}"]),
    max_size=6,
)
KEYS = st.one_of(NAMES, ODD_TEXT, st.text(max_size=8))
ANY = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


def plausible(key: str) -> st.SearchStrategy[Any]:
    """Values a user might well write for `key` (right or wrong)."""
    if key in ("command",):
        return st.lists(TEMPLATES | ODD_TEXT, max_size=4)
    if key in ("depends_on", "hosts"):
        return st.lists(NAMES | ODD_TEXT, max_size=3)
    if key in ("id", "agent", "ci", "host", "name", "address", "user"):
        return NAMES | ODD_TEXT
    if key == "policy":
        return st.sampled_from(["wave", "sequential", "wav", ""])
    if key == "env":
        return st.dictionaries(KEYS, ODD_TEXT | st.integers(), max_size=3)
    if key in ("state_dir", "workdir", "identity", "known_hosts", "prompt"):
        return ODD_TEXT | st.sampled_from(["/", ".", "..", "~/x", ""])
    return st.integers(min_value=-2, max_value=10**6) | st.floats() | st.booleans()


def table(schema: type) -> st.SearchStrategy[dict[str, Any]]:
    """A table with some of the keys of `schema`, and now and then one it lacks."""
    optional = {f.name: plausible(f.name) | ANY for f in fields(schema)}
    return st.fixed_dictionaries({}, optional=optional).flatmap(
        lambda known: st.dictionaries(KEYS, ANY, max_size=1).map(lambda extra: extra | known)
    )


FLEETS = st.fixed_dictionaries(
    {},
    optional={
        "fleet": table(FleetSection) | ANY,
        "hosts": st.dictionaries(NAMES, table(HostSpec) | ANY, max_size=2) | ANY,
        "agents": st.dictionaries(NAMES, table(WorkerSpec) | ANY, max_size=3) | ANY,
        "runners": st.dictionaries(NAMES, table(WorkerSpec) | ANY, max_size=2) | ANY,
        "tasks": st.lists(table(TaskSpec) | ANY, max_size=5) | ANY,
    },
).flatmap(lambda known: st.dictionaries(KEYS, ANY, max_size=1).map(lambda extra: extra | known))


@FUZZ
@given(FLEETS)
def test_fleets_shaped_like_the_schema(data: dict[str, Any]) -> None:
    check_verdict(tomli_w.dumps(data))


# A valid fleet, so that one changed value is often the only problem: that reaches
# the checks after the schema (references, graph, paths) and `run`'s first steps.
VALID: dict[str, Any] = {
    "fleet": {"name": "fuzz", "policy": "wave", "state_dir": "state", "grace_period": 1.0},
    "hosts": {"box": {"address": "box.example.com", "port": 22}},
    "agents": {
        "coder": {"command": ["echo", "{prompt}"], "slots": 2, "env": {"A": "1"}},
        "remote": {"command": ["true"], "hosts": ["box"], "workdir": "w", "timeout": 5},
    },
    "runners": {"ci": {"command": ["true"], "slots": 1}},
    "tasks": [
        {"id": "a", "agent": "coder", "ci": "ci", "prompt": "p", "retries": 1},
        {"id": "b", "agent": "remote", "depends_on": ["a"], "timeout": 3, "priority": 2},
    ],
}
# Where one value may be replaced: (section, name or index, key).
SLOTS = [
    *(("fleet", None, f.name) for f in fields(FleetSection)),
    *(("hosts", "box", f.name) for f in fields(HostSpec)),
    *(("agents", name, f.name) for name in ("coder", "remote") for f in fields(WorkerSpec)),
    *(("runners", "ci", f.name) for f in fields(WorkerSpec)),
    *(("tasks", index, f.name) for index in (0, 1) for f in fields(TaskSpec)),
]


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    for section, name, key in draw(st.lists(st.sampled_from(SLOTS), min_size=1, max_size=3)):
        value = draw(plausible(key) | ANY)
        target = data[section] if name is None else data[section][name]
        target[key] = value
    return data


@settings(FUZZ, max_examples=400)
@given(near_valid())
def test_a_valid_fleet_with_a_few_values_changed(data: dict[str, Any]) -> None:
    check_verdict(tomli_w.dumps(data))


TOKENS = st.sampled_from(
    [
        "\n",
        " ",
        "=",
        '"',
        "'",
        '"""',
        "[",
        "]",
        "[[",
        "]]",
        "{",
        "}",
        ",",
        ".",
        "#",
        "[fleet]",
        "[[tasks]]",
        "[agents.coder]",
        "[runners.ci]",
        "[hosts.box]",
        'id = "a"',
        'agent = "coder"',
        'ci = "ci"',
        'depends_on = ["a"]',
        'command = ["echo", "{prompt}"]',
        "slots = 0",
        "timeout = inf",
        "retries = -1",
        "1979-05-27T07:32:00Z",
        "nan",
        "\\u0000",
        "\ufeff",
    ]
)


@FUZZ
@given(st.lists(TOKENS, max_size=40).map("".join))
def test_token_soup(text: str) -> None:
    check_verdict(text)


@FUZZ
@given(st.data())
def test_the_demo_fleet_with_random_edits(data: st.DataObject) -> None:
    text = DEMO
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        cut = data.draw(st.integers(min_value=0, max_value=8))
        insert = data.draw(st.text(max_size=6) | TOKENS)
        text = text[:at] + insert + text[at + cut :]
    check_verdict(text)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_bytes_and_text(content: bytes | str) -> None:
    check_verdict(content)


# --- what the fuzzer found ----------------------------------------------------------------


def rejected(content: str) -> list[str]:
    """The problems `fleetdeck validate` reports, without the file name."""
    check_verdict(content)
    code, _out, err, path = validate(content)
    assert code == 2
    return [line.removeprefix(f"{path}: ") for line in err.splitlines()]


BASE = '[agents.a]\ncommand = ["true"]\n[[tasks]]\nid = "t"\nagent = "a"\n'


def test_control_characters_in_names_are_escaped_one_problem_a_line() -> None:
    """Found: a quoted key holding a newline or an escape split the message over
    lines and reached the terminal raw."""
    problems = rejected('"\\u001e\\n\\u001b[31m" = []\n' + BASE)
    assert problems == [
        "unknown key '\\x1e\\n\\x1b[31m'; "
        "valid keys: fleet, hosts, agents, runners, tasks, repo, policies"
    ]
    problems = rejected(BASE.replace("agent = ", 'depends_on = ["x\\ny"]\nagent = '))
    assert problems == ["tasks[0].depends_on: task 't' depends on unknown task 'x\\ny'"]


def test_nul_characters_are_refused_where_they_would_crash_the_run() -> None:
    """Found: `workdir = "\\u0000"` passed validation and `run` died resolving it."""
    text = (
        '[fleet]\nstate_dir = "s\\u0000"\n'
        '[agents.a]\ncommand = ["tr\\u0000ue"]\nworkdir = "\\u0000"\n'
        'env = { "K\\u0000" = "v", OK = "v\\u0000" }\n'
        '[[tasks]]\nid = "t"\nagent = "a"\n'
    )
    assert rejected(text) == [
        "fleet.state_dir: must not contain a NUL character (\\x00)",
        "agents.a.command[0]: must not contain a NUL character (\\x00)",
        "agents.a.workdir: must not contain a NUL character (\\x00)",
        "agents.a.env: the key 'K\\x00' must not contain a NUL character",
        "agents.a.env.OK: must not contain a NUL character (\\x00)",
    ]


def test_environment_variable_names_must_be_settable() -> None:
    text = BASE.replace('command = ["true"]', 'command = ["true"]\nenv = { "" = "x", "A=B" = "y" }')
    assert rejected(text) == [
        "agents.a.env: bad variable name '': it must be non-empty, without '='",
        "agents.a.env: bad variable name 'A=B': it must be non-empty, without '='",
    ]


def test_seconds_must_be_finite() -> None:
    """TOML has inf and nan; an infinite grace period would never SIGKILL."""
    text = "[fleet]\ngrace_period = inf\nretry_backoff = nan\n" + BASE + "timeout = -inf\n"
    assert rejected(text) == [
        "fleet.grace_period: must be a finite number of seconds, got inf",
        "fleet.retry_backoff: must be a finite number of seconds, got nan",
        "tasks[0].timeout: must be a finite number of seconds, got -inf",
    ]


def test_names_must_be_printable() -> None:
    """Found: `name = "\\n"` passed, and the name is on the screen and in every event."""
    text = '[fleet]\nname = "a\\nb"\n[hosts."h\\u001b"]\naddress = "x"\n' + BASE
    assert rejected(text) == [
        "fleet.name: 'a\\nb' has control characters; use printable text",
        "hosts: the name 'h\\x1b' has control characters; use printable text",
    ]
