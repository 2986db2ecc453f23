"""Config errors as a user meets them: `fleetdeck validate FILE`.

Every configuration problem must make `fleetdeck validate` exit 2 and print, on
stderr, one line per problem of the form `FILE: KEY.PATH: message` (or
`FILE: message` for problems with the file as a whole), with the nearest valid
name suggested where one is close, and never a traceback. The same problems are
checked through the library API (`load_fleet` / `parse_fleet` raising
`ConfigError` with `.problems`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetdeck.cli import main
from fleetdeck.config import (
    MAX_REPORTED_PROBLEMS,
    ConfigError,
    Problem,
    load_fleet,
    parse_fleet,
)

# --- building config text -------------------------------------------------------------

AGENT = '[agents.coder]\ncommand = ["echo", "{prompt}"]\n'
RUNNER = '[runners.ci]\ncommand = ["pytest", "-q"]\n'


def task(task_id: str, *, agent: str = "coder", **extra: object) -> str:
    """One `[[tasks]]` table; extra keys are written as TOML (via json, which agrees
    with TOML for strings, integers, floats, booleans and lists of those)."""
    lines = ["[[tasks]]", f"id = {json.dumps(task_id)}", f"agent = {json.dumps(agent)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


ONE_TASK = task("a")


def write(tmp_path: Path, text: str | bytes, name: str = "fleet.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def reject(path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run `fleetdeck validate PATH`, check it failed like a config error should,
    and return the stderr lines."""
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, f"exit code {code}; stderr:\n{err}"
    assert out == "", "a failed validation must not claim anything on stdout"
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines, "a config error must say what is wrong"
    for line in lines:
        assert line.startswith(f"{path}: "), f"line does not name the file: {line!r}"
    return lines


def find_line(lines: list[str], path: Path, key_path: str, *fragments: str) -> str:
    """The stderr line for the problem at `key_path` containing every fragment."""
    prefix = f"{path}: {key_path}: " if key_path else f"{path}: "
    matching = [
        line
        for line in lines
        if line.startswith(prefix) and all(fragment in line for fragment in fragments)
    ]
    assert matching, f"no line starting {prefix!r} containing {fragments!r} in:\n" + "\n".join(
        lines
    )
    return matching[0]


# --- single problems, table-driven ------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A config with exactly one problem, where it is (`key_path`) and what it says."""

    text: str
    key_path: str
    fragments: tuple[str, ...]


CASES: dict[str, Case] = {
    # Unknown keys, at every level: the nearest valid key and the list of valid keys.
    "unknown top-level key": Case(
        "fleeet = 1\n" + AGENT + ONE_TASK,
        "",
        (
            "unknown key 'fleeet'",
            "(did you mean 'fleet'?)",
            "valid keys: fleet, hosts, agents, runners, tasks, repo, policies",
        ),
    ),
    "[[task]] instead of [[tasks]]": Case(
        AGENT + '[[task]]\nid = "a"\nagent = "coder"\n',
        "",
        ("unknown key 'task'", "(did you mean 'tasks'?)"),
    ),
    "unknown key in [fleet]": Case(
        '[fleet]\npolcy = "wave"\n' + AGENT + ONE_TASK,
        "fleet",
        ("unknown key 'polcy'", "(did you mean 'policy'?)", "valid keys: name, policy,"),
    ),
    "unknown key in [agents.x]": Case(
        AGENT + "slot = 2\n" + ONE_TASK,
        "agents.coder",
        ("unknown key 'slot'", "(did you mean 'slots'?)", "valid keys: command, slots,"),
    ),
    "unknown key in [runners.x]": Case(
        AGENT + RUNNER + "slost = 1\n" + ONE_TASK,
        "runners.ci",
        ("unknown key 'slost'", "(did you mean 'slots'?)", "valid keys: command, slots,"),
    ),
    "unknown key in [hosts.x]": Case(
        AGENT + '[hosts.box]\naddress = "box.example.com"\nprot = 22\n' + ONE_TASK,
        "hosts.box",
        ("unknown key 'prot'", "(did you mean 'port'?)", "valid keys: address, port,"),
    ),
    "unknown key in [[tasks]] (index counts tasks)": Case(
        AGENT + task("a") + task("b") + 'depend_on = ["a"]\n',
        "tasks[1]",
        (
            "unknown key 'depend_on'",
            "(did you mean 'depends_on'?)",
            "valid keys: id, agent, prompt, ci, depends_on, retries, timeout, priority",
        ),
    ),
    # Wrong types.
    "string for slots": Case(
        '[agents.coder]\ncommand = ["x"]\nslots = "2"\n' + ONE_TASK,
        "agents.coder.slots",
        ("expected a whole number, got '2'",),
    ),
    "boolean for slots": Case(
        '[agents.coder]\ncommand = ["x"]\nslots = true\n' + ONE_TASK,
        "agents.coder.slots",
        ("expected a whole number, got true",),
    ),
    "float for retries": Case(
        AGENT + task("a", retries=1.5),
        "tasks[0].retries",
        ("expected a whole number, got 1.5",),
    ),
    "string for timeout": Case(
        AGENT + task("a", timeout="5"),
        "tasks[0].timeout",
        ("expected a number of seconds, got '5'",),
    ),
    "string for depends_on": Case(
        AGENT + task("b") + task("a", depends_on="b"),
        "tasks[1].depends_on",
        ("expected a list, got 'b'",),
    ),
    "string for command": Case(
        '[agents.coder]\ncommand = "claude -p"\n' + ONE_TASK,
        "agents.coder.command",
        ("expected a list",),
    ),
    "number inside command": Case(
        '[agents.coder]\ncommand = ["x", 1]\n' + ONE_TASK,
        "agents.coder.command[1]",
        ("expected a string, got 1",),
    ),
    "number as env value": Case(
        '[agents.coder]\ncommand = ["x"]\nenv = { DEBUG = 1 }\n' + ONE_TASK,
        "agents.coder.env.DEBUG",
        ("expected a string, got 1",),
    ),
    "string for a boolean": Case(
        AGENT + '[hosts.box]\naddress = "x"\ntrust_unknown_host_key = "yes"\n' + ONE_TASK,
        "hosts.box.trust_unknown_host_key",
        ("expected true or false, got 'yes'",),
    ),
    "agent as a number instead of a table": Case(
        "[agents]\ncoder = 3\n" + ONE_TASK,
        "agents.coder",
        ("expected a table, got 3",),
    ),
    "[tasks] table instead of [[tasks]]": Case(
        AGENT + '[tasks]\nid = "a"\nagent = "coder"\n',
        "tasks",
        ("expected a list",),
    ),
    # Missing required keys.
    "agent without command": Case(
        "[agents.coder]\nslots = 1\n" + ONE_TASK,
        "agents.coder",
        ("missing required key 'command'",),
    ),
    "task without id": Case(
        AGENT + '[[tasks]]\nagent = "coder"\n',
        "tasks[0]",
        ("missing required key 'id'",),
    ),
    "host without address": Case(
        AGENT + "[hosts.box]\nport = 22\n" + ONE_TASK,
        "hosts.box",
        ("missing required key 'address'",),
    ),
    # Out of range.
    "slots = 0": Case(
        '[agents.coder]\ncommand = ["x"]\nslots = 0\n' + ONE_TASK,
        "agents.coder.slots",
        ("must be at least 1, got 0",),
    ),
    "retries = -1": Case(
        AGENT + task("a", retries=-1),
        "tasks[0].retries",
        ("must be at least 0, got -1",),
    ),
    "port = 70000": Case(
        AGENT + '[hosts.box]\naddress = "x"\nport = 70000\n' + ONE_TASK,
        "hosts.box.port",
        ("must be at most 65535, got 70000",),
    ),
    "timeout = 0": Case(
        AGENT + task("a", timeout=0),
        "tasks[0].timeout",
        ("must be more than 0",),
    ),
    "max_in_flight = 0": Case(
        "[fleet]\nmax_in_flight = 0\n" + AGENT + ONE_TASK,
        "fleet.max_in_flight",
        ("must be at least 1, got 0",),
    ),
    # Bad policy value.
    "policy 'wav'": Case(
        '[fleet]\npolicy = "wav"\n' + AGENT + ONE_TASK,
        "fleet.policy",
        (
            "must be one of 'sequential', 'wave', 'pipelined', 'adaptive'",
            "got 'wav'",
            "(did you mean 'wave'?)",
        ),
    ),
    "policy 'sequentail'": Case(
        '[fleet]\npolicy = "sequentail"\n' + AGENT + ONE_TASK,
        "fleet.policy",
        ("got 'sequentail'", "(did you mean 'sequential'?)"),
    ),
    # Unknown references.
    "unknown agent": Case(
        AGENT + task("a", agent="codr"),
        "tasks[0].agent",
        ("unknown agent 'codr'", "(did you mean 'coder'?)", "defined agents: coder"),
    ),
    "unknown runner": Case(
        AGENT + RUNNER + task("a", ci="cii"),
        "tasks[0].ci",
        ("unknown runner 'cii'", "(did you mean 'ci'?)", "defined runners: ci"),
    ),
    "runner named but none defined": Case(
        AGENT + task("a", ci="ci"),
        "tasks[0].ci",
        ("unknown runner 'ci'",),
    ),
    "unknown host": Case(
        '[hosts.box1]\naddress = "x"\n[agents.coder]\ncommand = ["x"]\nhost = "box"\n' + ONE_TASK,
        "agents.coder.host",
        ("unknown host 'box'", "(did you mean 'box1'?)", "define it as [hosts.box]"),
    ),
    "unknown host in hosts list": Case(
        '[hosts.box1]\naddress = "x"\n[agents.coder]\ncommand = ["x"]\nhosts = ["box1", "bx1"]\n'
        + ONE_TASK,
        "agents.coder.hosts",
        ("unknown host 'bx1'", "(did you mean 'box1'?)"),
    ),
    "unknown host of a runner": Case(
        AGENT + '[runners.ci]\ncommand = ["x"]\nhost = "lcoal"\n' + ONE_TASK,
        "runners.ci.host",
        ("unknown host 'lcoal'", "(did you mean 'local'?)"),
    ),
    "unknown dependency": Case(
        AGENT + task("lint") + task("test") + task("build") + task("deploy", depends_on=["lnt"]),
        "tasks[3].depends_on",
        ("task 'deploy' depends on unknown task 'lnt' (did you mean 'lint'?)",),
    ),
    "self dependency": Case(
        AGENT + task("a", depends_on=["a"]),
        "tasks[0].depends_on",
        ("task 'a' depends on itself",),
    ),
    "dependency listed twice": Case(
        AGENT + task("b") + task("a", depends_on=["b", "b"]),
        "tasks[1].depends_on",
        ("'b' is listed twice",),
    ),
    "duplicate task id": Case(
        AGENT + task("a") + task("b") + task("a"),
        "tasks[2].id",
        ("duplicate task id 'a' (first used by tasks[0])",),
    ),
    # Hosts.
    "host and hosts both given": Case(
        '[hosts.box1]\naddress = "x"\n'
        '[agents.coder]\ncommand = ["x"]\nhost = "local"\nhosts = ["box1"]\n' + ONE_TASK,
        "agents.coder",
        ("give either 'host' or 'hosts', not both",),
    ),
    "empty hosts list": Case(
        '[agents.coder]\ncommand = ["x"]\nhosts = []\n' + ONE_TASK,
        "agents.coder.hosts",
        ("must not be empty",),
    ),
    "redefining [hosts.local]": Case(
        '[hosts.local]\naddress = "127.0.0.1"\n' + AGENT + ONE_TASK,
        "hosts.local",
        ("'local' is built in and cannot be redefined",),
    ),
    # Command templates.
    "unknown placeholder": Case(
        '[agents.coder]\ncommand = ["claude", "-p", "{promt}"]\n' + ONE_TASK,
        "agents.coder.command[2]",
        (
            "unknown placeholder {promt}",
            "did you mean",
            "placeholders are {task}, {prompt}, {attempt}, {workdir}",
        ),
    ),
    "unclosed brace": Case(
        '[agents.coder]\ncommand = ["claude", "{prompt"]\n' + ONE_TASK,
        "agents.coder.command[1]",
        ("bad template '{prompt'", "write {{ and }} for literal braces"),
    ),
    "stray closing brace": Case(
        '[runners.ci]\ncommand = ["check", "prompt}"]\n' + AGENT + ONE_TASK,
        "runners.ci.command[1]",
        ("bad template 'prompt}'", "write {{ and }} for literal braces"),
    ),
    "placeholder with a conversion": Case(
        '[agents.coder]\ncommand = ["x", "{prompt!r}"]\n' + ONE_TASK,
        "agents.coder.command[1]",
        ("placeholder {prompt} takes no format spec or conversion",),
    ),
    "empty command list": Case(
        "[agents.coder]\ncommand = []\n" + ONE_TASK,
        "agents.coder.command",
        ("must not be empty",),
    ),
    "empty runner command list": Case(
        AGENT + "[runners.ci]\ncommand = []\n" + ONE_TASK,
        "runners.ci.command",
        ("must not be empty",),
    ),
    # The fleet as a whole.
    "no tasks": Case(AGENT, "tasks", ("no tasks", "add at least one [[tasks]] table")),
    "empty file": Case("", "tasks", ("no tasks",)),
    "cycle": Case(
        AGENT
        + task("a", depends_on=["b"])
        + task("b", depends_on=["c"])
        + task("c", depends_on=["a"]),
        "tasks[0].depends_on",
        ("dependency cycle: a -> b -> c -> a",),
    ),
    "cycle behind an acyclic lead-in": Case(
        AGENT
        + task("root")
        + task("z", depends_on=["root", "a"])
        + task("a", depends_on=["b"])
        + task("b", depends_on=["a"]),
        "tasks[2].depends_on",
        ("dependency cycle: a -> b -> a",),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_validate_reports_the_problem_with_file_and_key_path(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, case.text)
    lines = reject(path, capsys)
    find_line(lines, path, case.key_path, *case.fragments)
    assert len(lines) == 1, "each case has exactly one problem:\n" + "\n".join(lines)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_parse_fleet_raises_config_error_with_the_problem(case: Case) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_fleet(case.text, source="team.toml")
    error = caught.value
    assert error.source == "team.toml"
    assert len(error.problems) == 1
    (problem,) = error.problems
    assert isinstance(problem, Problem)
    assert problem.path == case.key_path
    for fragment in case.fragments:
        assert fragment in problem.message
    # str() of the error is what the command line prints.
    assert str(error) == f"team.toml: {problem}"


def test_unknown_placeholder_suggestion_is_written_as_a_placeholder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fix for `{promt}` is `{prompt}`, braces included: the suggestion should be
    something the user can paste back into the template."""
    path = write(tmp_path, '[agents.coder]\ncommand = ["claude", "-p", "{promt}"]\n' + ONE_TASK)
    lines = reject(path, capsys)
    find_line(lines, path, "agents.coder.command[2]", "(did you mean '{prompt}'?)")


def test_no_suggestion_when_nothing_is_close(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A far-fetched guess is worse than none; the list of valid keys still helps."""
    path = write(tmp_path, AGENT + task("a", zzzzzz=1))
    lines = reject(path, capsys)
    line = find_line(lines, path, "tasks[0]", "unknown key 'zzzzzz'", "valid keys: id,")
    assert "did you mean" not in line


@pytest.mark.parametrize(
    "bad_id",
    ["a b", "-leading-dash", ".hidden", "", "café", "tab\there", "x" * 101, "a/b"],
)
def test_bad_task_id_characters_are_rejected(
    bad_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, AGENT + task("ok") + task(bad_id))
    lines = reject(path, capsys)
    find_line(lines, path, "tasks[1].id", f"bad task id {bad_id!r}", "letters, digits")


@pytest.mark.parametrize("good_id", ["a", "A9", "auth-api", "v1.2_rc-3", "9lives", "x" * 100])
def test_good_task_ids_are_accepted(good_id: str) -> None:
    fleet = parse_fleet(AGENT + task(good_id))
    assert fleet.dag.ids == (good_id,)


# --- problems with the file itself ---------------------------------------------------


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.toml"
    assert reject(path, capsys) == [f"{path}: no such file"]
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    assert caught.value.source == str(path)
    assert caught.value.problems == [Problem("", "no such file")]


def test_directory_instead_of_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert reject(tmp_path, capsys) == [f"{tmp_path}: is a directory, not a config file"]
    with pytest.raises(ConfigError) as caught:
        load_fleet(tmp_path)
    assert [p.message for p in caught.value.problems] == ["is a directory, not a config file"]


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file"
)
def test_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, AGENT + ONE_TASK)
    path.chmod(0)
    lines = reject(path, capsys)
    find_line(lines, path, "", "cannot read", "Permission denied")


def test_non_utf8_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Latin-1 'é' (0xE9) inside a string: 8 bytes of '[fleet]\n', then 'name = "caf'.
    path = write(tmp_path, b'[fleet]\nname = "caf\xe9"\n')
    assert reject(path, capsys) == [f"{path}: not UTF-8 text (bad byte at offset 19)"]
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    assert "not UTF-8" in caught.value.problems[0].message


def test_utf8_byte_order_mark_is_not_a_mystery(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Editors on Windows save UTF-8 with a BOM. Either the file is accepted, or the
    message says what is wrong: "Invalid statement (at line 1, column 1)" on a line
    that looks perfectly fine sends the user hunting for the wrong thing."""
    path = write(tmp_path, ("\ufeff" + AGENT + ONE_TASK).encode("utf-8"))
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if code != 0:
        assert code == 2
        assert "BOM" in err or "byte order mark" in err.lower(), err
    else:
        assert ": ok:" in out


def test_broken_toml_names_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = AGENT + '[[tasks]]\nid = "a\nagent = "coder"\n'  # unterminated string, line 4
    path = write(tmp_path, text)
    (line,) = reject(path, capsys)
    assert line.startswith(f"{path}: invalid TOML: ")
    assert re.search(r"\(at line 4, column \d+\)", line), line


def test_duplicate_toml_key_is_a_toml_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, AGENT + "slots = 1\nslots = 2\n" + ONE_TASK)
    (line,) = reject(path, capsys)
    assert line.startswith(f"{path}: invalid TOML: ")
    assert "line 4" in line


def test_deeply_nested_toml_is_a_config_error_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tomllib recurses per nesting level; a pathological (or generated) file must
    still end in exit 2 and a message, not a RecursionError traceback."""
    depth = 2000
    path = write(tmp_path, "x = " + "[" * depth + "]" * depth + "\n")
    lines: list[str] = []
    crashed = False
    try:
        lines = reject(path, capsys)
    except RecursionError:
        crashed = True
    # Failing outside the `except` keeps pytest from rendering 1000 chained frames.
    assert not crashed, "RecursionError escaped main(): the user gets a traceback and exit 1"
    assert any("nest" in line or "invalid TOML" in line for line in lines), lines


# --- several problems at once -------------------------------------------------------


def test_schema_problems_are_all_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        '[fleet]\npolicy = "wav"\nslots = 3\n'
        '[agents.coder]\ncommand = ["x"]\nslots = 0\n'
        + task("a", retries=-1)
        + task("b", timeout="5")
    )
    path = write(tmp_path, text)
    lines = reject(path, capsys)
    find_line(lines, path, "fleet.policy", "(did you mean 'wave'?)")
    find_line(lines, path, "fleet", "unknown key 'slots'")
    find_line(lines, path, "agents.coder.slots", "must be at least 1")
    find_line(lines, path, "tasks[0].retries", "must be at least 0")
    find_line(lines, path, "tasks[1].timeout", "expected a number of seconds")
    assert len(lines) == 5


def test_reference_problems_are_all_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        '[hosts.local]\naddress = "x"\n'
        '[agents.coder]\ncommand = ["x", "{promt}"]\n'
        + task("lint")
        + task("lint")
        + task("deploy", agent="codr", depends_on=["lnt"])
    )
    path = write(tmp_path, text)
    lines = reject(path, capsys)
    find_line(lines, path, "hosts.local", "built in")
    find_line(lines, path, "agents.coder.command[1]", "unknown placeholder {promt}")
    find_line(lines, path, "tasks[1].id", "duplicate task id 'lint'")
    find_line(lines, path, "tasks[2].agent", "unknown agent 'codr'")
    find_line(lines, path, "tasks[2].depends_on", "unknown task 'lnt' (did you mean 'lint'?)")
    assert len(lines) == 5


def test_type_and_reference_problems_are_reported_in_one_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user fixing a file should see everything wrong with it in one run, not
    learn about the unknown agent only after fixing an unrelated type error."""
    text = AGENT + task("a", retries=-1) + task("b", agent="codr")
    path = write(tmp_path, text)
    lines = reject(path, capsys)
    find_line(lines, path, "tasks[0].retries", "must be at least 0")
    find_line(lines, path, "tasks[1].agent", "unknown agent 'codr'")


def test_long_problem_lists_are_capped_with_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    total = MAX_REPORTED_PROBLEMS + 10
    text = AGENT + "".join(task(f"t{i}", depends_on=[f"missing{i}"]) for i in range(total))
    path = write(tmp_path, text)
    lines = reject(path, capsys)
    assert len(lines) == MAX_REPORTED_PROBLEMS + 1
    assert lines[-1] == f"{path}: ... and 10 more problems"
    find_line(lines, path, "tasks[0].depends_on", "unknown task 'missing0'")
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    # The exception keeps every problem; only the rendering is capped.
    assert len(caught.value.problems) == total


# --- valid files ------------------------------------------------------------------------

VALID_BODY = (
    AGENT
    + RUNNER
    + task("schema", ci="ci")
    + task("api", depends_on=["schema"], ci="ci")
    + task("ui")
    + task("e2e", depends_on=["api", "ui"], ci="ci")
)
VALID = '[fleet]\nname = "demo"\n' + VALID_BODY

# The configuration example of the product's design, as written there: it must validate.
DESIGN_EXAMPLE = """
[fleet]
name = "demo"
policy = "wave"              # or "sequential"
max_in_flight = 8            # optional cap over the whole fleet
state_dir = ".fleetdeck"     # journal and logs; relative to the config file

[hosts.box1]                 # optional; "local" always exists
address = "box1.example.com"
user = "dev"
port = 22

[agents.coder]
command = ["claude", "-p", "{prompt}"]
slots = 2
host = "local"
env = { EXAMPLE = "1" }

[runners.ci]
command = ["pytest", "-q"]
slots = 1

[[tasks]]
id = "auth-api"
prompt = "Add the /login endpoint"
agent = "coder"
ci = "ci"                    # optional
depends_on = []
retries = 2                  # extra attempts after the first
timeout = 1800               # seconds per attempt
priority = 0                 # higher first
"""


def test_valid_file_passes_with_its_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, VALID)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    # Only warnings: its tasks have no prompt (and pytest may not be on PATH here).
    assert all(": warning: " in line for line in err.splitlines()), err
    assert out.strip() == (
        f"{path}: ok: fleet 'demo', 4 tasks in 3 waves (longest chain 3), "
        "1 agent, 1 runner, policy wave"
    )


def test_valid_file_singular_wave_and_name_from_file_stem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[fleet]\npolicy = "sequential"\n' + AGENT + ONE_TASK, "night.toml")
    assert main(["validate", str(path)]) == 0
    out, _ = capsys.readouterr()
    assert out.strip() == (
        f"{path}: ok: fleet 'night', 1 task in 1 wave (longest chain 1), "
        "1 agent, 0 runners, policy sequential"
    )


def test_the_design_example_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, DESIGN_EXAMPLE)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert all(": warning: " in line for line in err.splitlines()), err
    assert "ok: fleet 'demo', 1 task in 1 wave" in out
    fleet = load_fleet(path)
    (spec,) = fleet.tasks
    assert (spec.retries, spec.timeout, spec.ci) == (2, 1800, "ci")
    assert fleet.config.fleet.max_in_flight == 8
    assert fleet.config.hosts["box1"].address == "box1.example.com"
    assert fleet.config.agents["coder"].env == {"EXAMPLE": "1"}


def test_load_fleet_builds_the_dag_and_resolves_paths(tmp_path: Path) -> None:
    path = write(tmp_path, '[fleet]\nstate_dir = "state"\n' + VALID_BODY)
    fleet = load_fleet(path)
    assert fleet.source == str(path)
    assert [t.id for t in fleet.tasks] == ["schema", "api", "ui", "e2e"]
    assert list(fleet.dag.levels) == [0, 1, 0, 2]
    assert fleet.base_dir == tmp_path
    # Relative paths are relative to the config file, not to the current directory.
    assert fleet.state_dir == (tmp_path / "state").resolve()
    assert fleet.workdir(fleet.config.agents["coder"]) == tmp_path.resolve()


def test_accepted_forms(capsys: pytest.CaptureFixture[str]) -> None:
    """Things that look odd but are valid: a dependency declared before the task it
    names, integer seconds, literal braces, every placeholder, hosts lists."""
    text = (
        '[hosts.box1]\naddress = "box1"\n[hosts.box2]\naddress = "box2"\n'
        '[agents.coder]\ncommand = ["{python}", "run", "{task}", "{prompt}", "{attempt}", '
        '"{workdir}", "{{literal}}"]\nhosts = ["box1", "box2", "local"]\ntimeout = 60\n'
        + task("later-user", depends_on=["defined-later"], timeout=30, priority=-2)
        + task("defined-later", prompt="p")
    )
    fleet = parse_fleet(text)
    assert list(fleet.dag.levels) == [1, 0]
    assert fleet.config.agents["coder"].host_names == ("box1", "box2", "local")
    assert fleet.tasks[0].timeout == 30


def test_default_host_is_local() -> None:
    fleet = parse_fleet(AGENT + ONE_TASK)
    assert fleet.config.agents["coder"].host_names == ("local",)


# --- other command line behaviour ---------------------------------------------------


def test_validate_without_a_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["validate"])
    assert caught.value.code == 2
    _, err = capsys.readouterr()
    assert "CONFIG" in err
    assert "Traceback" not in err


def test_schema_prints_json_schema_that_forbids_unknown_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Editors use this schema; it must flag the same typos `validate` does."""
    assert main(["schema"]) == 0
    out, _ = capsys.readouterr()
    schema = json.loads(out)
    # Editors tell the dialect by it (taplo's `#:schema` directive, VS Code).
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == {
        "fleet",
        "hosts",
        "agents",
        "runners",
        "tasks",
        "repo",
        "policies",
    }
    assert schema["additionalProperties"] is False
    for name, definition in schema["$defs"].items():
        assert definition.get("additionalProperties") is False, name
    assert schema["$defs"]["FleetSection"]["properties"]["policy"]["enum"] == [
        "sequential",
        "wave",
        "pipelined",
        "adaptive",
    ]


def test_validate_end_to_end_in_a_real_process(tmp_path: Path) -> None:
    """`python -m fleetdeck validate` exits 2 with a message and no traceback."""
    path = write(tmp_path, AGENT + task("lint") + task("deploy", depends_on=["lnt"]))
    result = subprocess.run(
        [sys.executable, "-m", "fleetdeck", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"{path}: tasks[1].depends_on: task 'deploy' depends on unknown task 'lnt' "
        "(did you mean 'lint'?)"
    )


def test_pydantic_plugins_stay_out_of_the_config(tmp_path: Path) -> None:
    """A pydantic plugin installed beside fleetdeck (logfire's is one) is meant for an
    application's own models: it is neither imported (logfire's pulls in its whole SDK
    at every start) nor able to break `validate`, and the user's setting is kept."""
    site = tmp_path / "site"
    dist = site / "observer-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: observer\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pydantic]\nobserver = observer_plugin:plugin\n")
    marker = tmp_path / "imported"
    (site / "observer_plugin.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('a broken plugin')\n"
    )
    path = write(tmp_path, AGENT + task("a", prompt="p"))
    code = (
        "import os, sys\n"
        "from fleetdeck.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(os.environ.get('PYDANTIC_DISABLE_PLUGINS'))\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            "PYDANTIC_DISABLE_PLUGINS": "other",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[-1] == "other"
    assert not marker.exists()


# --- [policies.NAME] ---------------------------------------------------------------------


def test_policies_tables_name_known_policies_and_each_checks_its_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = AGENT + "[policies.wav]\nx = 1\n[policies.sequential]\nwindow = 3\n" + task("lint")
    path = write(tmp_path, text)
    lines = reject(path, capsys)
    find_line(lines, path, "policies.wav", "got 'wav' (did you mean 'wave'?)")
    find_line(lines, path, "policies.sequential", "takes no parameters (got window)")
    assert len(lines) == 2


def test_the_adaptive_policys_parameters_are_checked_where_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = AGENT + "[policies.adaptive]\nwindow = 0\nci_wait_max = 60\n" + task("lint")
    path = write(tmp_path, text)
    lines = reject(path, capsys)
    find_line(lines, path, "policies.adaptive", "window must be a whole number of 1 or more")
    assert len(lines) == 1
    good = AGENT + "[policies.adaptive]\nwindow = 3\nci_wait_max = 60\n" + task("lint")
    fleet = parse_fleet(good, source="f.toml")
    assert fleet.config.policy_params("adaptive") == {"window": 3, "ci_wait_max": 60}


def test_an_empty_policies_table_is_valid_and_kept_per_policy() -> None:
    fleet = parse_fleet(AGENT + "[policies.wave]\n" + task("lint"), source="f.toml")
    assert fleet.config.policy_params("wave") == {}
    assert fleet.config.policy_params("sequential") is None
