"""`fleetdeck validate`: every problem at once, and warnings that do not fail it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetdeck.cli import main

SELF_AND_CYCLE = """
[agents.coder]
command = ["echo", "{prompt}"]

[[tasks]]
id = "lint"
prompt = "p"
agent = "coder"
depends_on = ["lint"]

[[tasks]]
id = "api"
prompt = "p"
agent = "coder"
depends_on = ["ui"]

[[tasks]]
id = "ui"
prompt = "p"
agent = "coder"
depends_on = ["api"]
"""


def validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    return code, (err + out).replace(f"{path}: ", "")


def test_a_self_dependency_does_not_hide_a_cycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, shown = validate(tmp_path, SELF_AND_CYCLE, capsys)
    assert code == 2
    assert shown.splitlines() == [
        "tasks[0].depends_on: task 'lint' depends on itself",
        "tasks[1].depends_on: dependency cycle: api -> ui -> api",
    ]


def test_warnings_for_a_missing_program_workdir_and_prompt_still_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not-executable.sh").write_text("exit 0\n")
    text = """
[hosts.box]
address = "box.example.com"

[agents.local]
command = ["no-such-agent-here", "{prompt}"]
workdir = "missing"

[agents.remote]
command = ["no-such-agent-here", "{prompt}"]
host = "box"
workdir = "/nowhere/on/this/machine"

[runners.ci]
command = ["./not-executable.sh"]

[runners.ok]
command = ["sh", "-c", "true"]

[[tasks]]
id = "silent"
agent = "local"
ci = "ci"

[[tasks]]
id = "fine"
prompt = "do it"
agent = "remote"
ci = "ok"
"""
    code, shown = validate(tmp_path, text, capsys)
    assert code == 0
    lines = shown.splitlines()
    assert lines[-1].startswith("ok: fleet ")
    missing = tmp_path / "missing"
    # Nothing about the agent on an SSH host: this machine cannot tell what it has.
    assert lines[:-1] == [
        f"agents.local.workdir: warning: workdir 'missing' does not exist ({missing})",
        "agents.local.command: warning: 'no-such-agent-here' is not on PATH on this machine "
        "(if it is on an SSH host, name that host with `host`)",
        "runners.ci.command: warning: './not-executable.sh' is not an executable file here",
        "tasks[0].prompt: warning: task 'silent' has no prompt ({prompt} is empty)",
    ]


def test_many_tasks_without_a_prompt_are_counted_not_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = "".join(f'[[tasks]]\nid = "t{i}"\nagent = "sh"\n' for i in range(8))
    code, shown = validate(tmp_path, '[agents.sh]\ncommand = ["sh"]\n' + tasks, capsys)
    assert code == 0
    warnings = shown.splitlines()[:-1]
    assert len(warnings) == 6
    assert warnings[-1] == "tasks: warning: ... and 3 more tasks without a prompt"


def test_an_api_agent_whose_key_is_not_set_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleetdeck.checks import config_warnings
    from fleetdeck.config import parse_fleet

    monkeypatch.delenv("FLEETDECK_TEST_KEY", raising=False)
    fleet = parse_fleet(
        '[agents.w]\nkind = "openai"\nmodel = "m"\napi_key_env = "FLEETDECK_TEST_KEY"\n'
        '[[tasks]]\nid = "a"\nagent = "w"\nprompt = "x"\n',
        base_dir=tmp_path,
    )
    assert [str(w) for w in config_warnings(fleet)] == [
        "agents.w.api_key_env: warning: $FLEETDECK_TEST_KEY is not set here "
        "(every request of this agent would fail)"
    ]
    monkeypatch.setenv("FLEETDECK_TEST_KEY", "sk-set")
    assert config_warnings(fleet) == []
