"""`[fleet] secrets`: the values of the named variables never show or get recorded."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from conftest import EngineHarness, env_without_fleetdeck, make_fleet, wait_for_file
from fleetdeck.config import ConfigError, parse_fleet
from fleetdeck.inprocess import InProcessClient
from fleetdeck.logtail import LogFollower, last_line
from fleetdeck.model import Stage
from fleetdeck.redact import MASK, Redactor
from fleetdeck.testing import ManualExecutor
from test_cli_run import fleetdeck

# Two secrets: one only in the supervisor's environment, one only in the config.
FROM_ENV = "sk-live-4f9a2c7e1b"
FROM_CONFIG = "hunter2-correct-horse"


# --- the redactor -----------------------------------------------------------------------


def test_every_value_is_masked_longest_first() -> None:
    redactor = Redactor(["abcd", "abcdef", "zz"])
    assert redactor.text("x abcdef y abcd abc") == "x *** y *** abc"
    assert redactor.longest == 6
    # "zz" is too short to mask: it is kept out entirely.
    assert redactor.text("zz") == "zz"
    assert not Redactor([]) and not Redactor(["ab", "  "])


def test_values_read_with_a_newline_are_masked_without_it() -> None:
    assert Redactor(["token123\n"]).text("got token123 ok") == "got *** ok"


def test_regex_characters_in_values_are_literal() -> None:
    redactor = Redactor(["a.b*c(d)"])
    assert redactor.text("a.b*c(d) axbbc(d)") == "*** axbbc(d)"


def test_event_details_mask_strings_but_keep_the_vocabulary() -> None:
    redactor = Redactor(["agent-secret"])
    details = redactor.details(
        {"stage": Stage.AGENT, "error": "no agent-secret", "load": (1.0, 2.0), "n": 3}
    )
    assert details == {"stage": Stage.AGENT, "error": f"no {MASK}", "load": (1.0, 2.0), "n": 3}
    # Types are kept: the headless view prints a tuple as a tuple.
    assert type(details["stage"]) is Stage and type(details["load"]) is tuple


def test_the_stored_config_keeps_identifiers() -> None:
    redactor = Redactor(["coder"])
    text = json.dumps(
        {"agents": {"coder": {"command": ["coder", "-x"]}}, "tasks": [{"id": "coder"}]}
    )
    assert json.loads(redactor.config_json(text)) == {
        "agents": {"coder": {"command": [MASK, "-x"]}},
        "tasks": [{"id": "coder"}],
    }


def test_the_fleet_takes_values_from_worker_env_and_the_supervisor() -> None:
    fleet = parse_fleet(
        '[fleet]\nsecrets = ["A_TOKEN", "B_TOKEN", "SHORT", "UNSET", "EMPTY"]\n'
        '[agents.a]\ncommand = ["true"]\nenv = { A_TOKEN = "from-config", SHORT = "ab" }\n'
        '[[tasks]]\nid = "t"\nagent = "a"\n'
    )
    assert fleet.secrets == ("A_TOKEN", "B_TOKEN", "SHORT", "UNSET", "EMPTY")
    redactor = Redactor.for_fleet(fleet, {"B_TOKEN": "from-environ", "EMPTY": "", "A": "x"})
    assert redactor.text("from-config from-environ ab") == "*** *** ab"
    assert redactor.too_short == ("SHORT",)


def test_secret_names_are_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_fleet(
            '[fleet]\nsecrets = ["OK", "1BAD", "A-B", "OK"]\n'
            '[agents.a]\ncommand = ["true"]\n[[tasks]]\nid = "t"\nagent = "a"\n',
            source="f.toml",
        )
    assert caught.value.render().splitlines() == [
        "f.toml: fleet.secrets[1]: '1BAD' is not an environment variable name "
        "(letters, digits and '_', not starting with a digit)",
        "f.toml: fleet.secrets[2]: 'A-B' is not an environment variable name "
        "(letters, digits and '_', not starting with a digit)",
        "f.toml: fleet.secrets[3]: 'OK' is listed twice",
    ]


def test_log_tails_are_masked(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(f"first {FROM_ENV}\nthen \x1b[1m{FROM_ENV[:4]}\x1b[0m{FROM_ENV[4:]} done\n")
    redactor = Redactor([FROM_ENV])
    assert LogFollower(str(log), redact=redactor).read() == [
        f"first {MASK}",
        f"then {MASK} done",
    ]
    assert last_line(str(log), redact=redactor) == f"then {MASK} done"
    # A line longer than the window, cut inside the secret: no piece of it shows.
    tail = " and the rest of a long line\n"
    log.write_text("x" * 100 + FROM_ENV + tail)
    for extra in (5, len(FROM_ENV) + 2):
        # Cut inside the secret, or just before it (then it is whole and masked).
        cut = last_line(str(log), window=len(tail) + extra, redact=redactor)
        assert cut.startswith("…") and cut.endswith("of a long line"), cut
        pieces = {FROM_ENV[i : i + 4] for i in range(len(FROM_ENV) - 3)}
        assert not any(piece in cut for piece in pieces), cut


# --- end to end -------------------------------------------------------------------------

LEAKY_FLEET = f"""
[fleet]
name = "secrets"
state_dir = "state"
retry_backoff = 0.05
secrets = ["TEST_TOKEN", "CONFIG_TOKEN"]

[agents.leaky]
command = ["sh", "-c", "echo $1 $CONFIG_TOKEN $TEST_TOKEN | tee $FLEETDECK_OUTPUT", "-",
  "{{prompt}}"]
env = {{ CONFIG_TOKEN = "{FROM_CONFIG}" }}

[agents.missing]
command = ["/no/such/dir/{FROM_CONFIG}/{{prompt}}"]

[[tasks]]
id = "prints"
prompt = "the key is {FROM_ENV}"
agent = "leaky"

[[tasks]]
id = "cannot-start"
prompt = "{FROM_ENV}"
agent = "missing"
"""


def test_secrets_appear_nowhere_in_events_journal_or_report(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(LEAKY_FLEET)
    env = env_without_fleetdeck() | {"TEST_TOKEN": FROM_ENV}
    done = fleetdeck("run", str(config), "--json", env=env)
    assert done.returncode == 1, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    failed = [e for e in events if e["event"] == "attempt_finished" and e["task"] == "cannot-start"]
    # The error names the command, with the secret in it masked.
    assert failed[0]["error"] == f"command not found: '/no/such/dir/{MASK}/{MASK}'"
    text_run = fleetdeck("run", str(config), "--no-tui", env=env)
    state = tmp_path / "state"
    db = sqlite3.connect(state / "journal.sqlite3")
    rows = [
        *db.execute("SELECT * FROM events"),
        *db.execute("SELECT * FROM attempts"),
        *db.execute("SELECT * FROM runs"),
    ]
    db.close()
    report = fleetdeck("report", str(state))
    report_json = fleetdeck("report", str(state), "--json", "--run", "1")
    assert report.returncode == 0 and report_json.returncode == 0, report.stderr
    # The agent printed both secrets; its shim masked them in the log on disk.
    log = (state / "runs" / "1" / "prints.1.agent.log").read_text()
    assert f"the key is {MASK} {MASK} {MASK}" in log
    everything = "\n".join(
        [
            done.stdout,
            done.stderr,
            text_run.stdout,
            text_run.stderr,
            report.stdout,
            report_json.stdout,
            *map(repr, rows),
        ]
    )
    assert MASK in everything
    for secret in (FROM_ENV, FROM_CONFIG):
        assert secret not in everything


async def test_snapshots_details_and_log_tails_are_masked(
    harness: EngineHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETDECK_TEST_TOKEN", FROM_ENV)
    go = tmp_path / "go"
    fleet = make_fleet(
        tmp_path,
        [
            {
                "id": "talks",
                "agent": "sh",
                "prompt": (
                    f'echo "key $FLEETDECK_TEST_TOKEN"; echo "out {FROM_ENV}" > $FLEETDECK_OUTPUT;'
                    f" while [ ! -e {go} ]; do sleep 0.02; done; echo last $FLEETDECK_TEST_TOKEN"
                ),
            }
        ],
        secrets=["FLEETDECK_TEST_TOKEN"],
    )
    engine = harness.engine(fleet, sample_interval=None)
    client = InProcessClient(engine)
    running = asyncio.ensure_future(engine.run())
    try:
        for _ in range(500):
            attempts = client.snapshot().running
            if attempts and client.last_lines([attempts[0].log_path])[attempts[0].log_path]:
                break
            await asyncio.sleep(0.02)
        log_path = client.snapshot().running[0].log_path
        assert client.last_lines([log_path]) == {log_path: [f"key {MASK}"]}
        detail = client.task_detail("talks")
        assert FROM_ENV not in detail.prompt and MASK in detail.prompt
        assert client.follow_log(detail.attempts[0].log_path).read() == [f"key {MASK}"]
        go.touch()
        result = await running
    finally:
        go.touch()
        if not running.done():
            await running
    assert result.exit_code == 0
    log = wait_for_file(Path(client.task_detail("talks").attempts[0].log_path))
    assert FROM_ENV not in log and f"key {MASK}" in log  # masked on disk by the shim
    detail = client.task_detail("talks")
    assert detail.output is not None and detail.output.strip() == f"out {MASK}"
    assert client.follow_log(log_path).read() == [f"key {MASK}", f"last {MASK}"]
    assert all(FROM_ENV not in repr(record) for record in client.timeline().attempts)


async def test_the_client_masks_what_it_reads_of_logs(
    harness: EngineHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log on disk may hold a secret (an executor without the shim, a log copied
    from elsewhere): what a view reads of it through the client is masked all
    the same, the in-flight pane's last line and the detail screen's feed."""
    monkeypatch.setenv("FLEETDECK_TEST_TOKEN", FROM_ENV)
    fleet = make_fleet(tmp_path, [{"id": "talks", "agent": "sh"}], secrets=["FLEETDECK_TEST_TOKEN"])
    executor = ManualExecutor()
    engine = harness.engine(fleet, sample_interval=None, executors={"local": executor})
    client = InProcessClient(engine)
    running = asyncio.ensure_future(engine.run())
    try:
        for _ in range(500):
            if "talks" in executor.current:
                break
            await asyncio.sleep(0.01)
        executor.say("talks", f"first {FROM_ENV} line")
        executor.say("talks", f"then the key {FROM_ENV}")
        (attempt,) = client.snapshot().running
        log = attempt.log_path
        assert FROM_ENV in Path(log).read_text()  # on disk as the attempt wrote it
        assert client.last_lines([log]) == {log: [f"then the key {MASK}"]}
        assert client.last_lines([log], 2) == {log: [f"first {MASK} line", f"then the key {MASK}"]}
        feed = client.follow_log(log)
        assert feed.read()[-2:] == [f"first {MASK} line", f"then the key {MASK}"]
        executor.say("talks", f"{FROM_ENV} again")
        assert feed.read() == [f"{MASK} again"]
        # A log that is not there has no lines, and says so without an error.
        missing = str(tmp_path / "nowhere.log")
        assert client.last_lines([missing], 3) == {missing: []}
        executor.finish("talks")
        await running
    finally:
        if not running.done():
            engine.request_stop(hurry=True)
            await running
