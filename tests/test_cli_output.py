"""What `fleetdeck run` leaves on the terminal: why an attempt failed, and what the
run did once the TUI has gone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import PYTHON
from fleetdeck.journal import Journal
from test_cli_run import fleetdeck, write_config

# Seven lines of output, a secret among the last five, then a failure.
FAILING = """
[[tasks]]
id = "broken"
prompt = "for n in 1 2 3 4 5 6; do echo line $n; done; echo token=$API_TOKEN >&2; exit 3"
agent = "sh"
"""
SECRET = "s3cr3t-value-123"


def failing_config(tmp_path: Path) -> Path:
    config = write_config(tmp_path, FAILING, fleet='secrets = ["API_TOKEN"]')
    text = config.read_text().replace(
        "slots = 2\n", f'slots = 2\nenv = {{ API_TOKEN = "{SECRET}" }}\n', 1
    )
    config.write_text(text)
    return config


def test_headless_shows_the_log_and_last_lines_of_a_failed_attempt(tmp_path: Path) -> None:
    config = failing_config(tmp_path)
    done = fleetdeck("run", str(config), "--no-tui")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if "outcome=failed" in line)
    log = tmp_path / "state" / "runs" / "1" / "broken.1.agent.log"
    assert lines[failed + 1].split() == ["log", f"{log},", "last", "lines:"]
    # The last five lines, under the event, the secret masked as everywhere else.
    assert [line.strip() for line in lines[failed + 2 : failed + 7]] == [
        "| line 3",
        "| line 4",
        "| line 5",
        "| line 6",
        "| token=***",
    ]
    assert "task_failed" in lines[failed + 7]
    assert SECRET not in done.stdout


def test_json_adds_the_log_and_its_tail_to_a_failed_attempt(tmp_path: Path) -> None:
    config = failing_config(tmp_path)
    done = fleetdeck("run", str(config), "--json")
    assert done.returncode == 1, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    (failed,) = [e for e in events if e["event"] == "attempt_finished"]
    assert failed["log"] == str(tmp_path / "state" / "runs" / "1" / "broken.1.agent.log")
    assert failed["tail"] == ["line 3", "line 4", "line 5", "line 6", "token=***"]
    assert SECRET not in done.stdout


def test_a_successful_attempt_has_no_tail(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[[tasks]]\nid = "ok"\nprompt = "echo fine"\nagent = "sh"\n')
    done = fleetdeck("run", str(config), "--json")
    assert done.returncode == 0, done.stderr
    (finished,) = [
        e for e in map(json.loads, done.stdout.splitlines()) if e["event"] == "attempt_finished"
    ]
    assert "log" not in finished and "tail" not in finished


# `fleetdeck run` as on a terminal, with a stand-in for the TUI that runs the run it is
# handed (to the end, or stopped as `q` stops it) and returns the exit code as run_tui does.
STUB_TUI = """
import asyncio, sys
from fleetdeck import cli

STOP = sys.argv[1] == "stop"

def stub(client, lifecycle):
    async def go():
        lifecycle.start()
        if STOP:
            asyncio.get_running_loop().call_later(0.3, client.request_stop)
        try:
            return (await lifecycle.wait()).exit_code
        finally:
            await lifecycle.close()
    return asyncio.run(go())

cli._on_terminal = lambda: True
cli._tui_runner = lambda: stub
sys.exit(cli.main(sys.argv[2:]))
"""


def run_with_stub_tui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-c", STUB_TUI, *args], capture_output=True, text=True, timeout=120
    )


def test_after_the_tui_the_table_the_report_and_where_the_journal_is(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[[tasks]]\nid = "ok"\nprompt = "echo fine"\nagent = "sh"\n')
    done = run_with_stub_tui("finish", "run", str(config))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    table, report, where = out.split("\n\n")
    assert table.splitlines()[1].split()[:3] == ["ok", "succeeded", "1"]
    assert report.startswith("makespan") and "completion rate   100%" in report
    state = tmp_path / "state"
    assert where == (
        f"run 1: journal and logs in {state}; `fleetdeck report {state}` prints this report again\n"
    )
    assert "resumes it" not in out


def test_after_an_interrupted_tui_run_the_command_that_resumes_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[[tasks]]\nid = "slow"\nprompt = "sleep 30"\nagent = "sh"\n')
    elsewhere = tmp_path / "elsewhere"
    done = run_with_stub_tui(
        "stop", "run", str(config), "--fresh", "--state-dir", str(elsewhere), "--policy", "wave"
    )
    assert done.returncode == 130, done.stderr
    last = done.stdout.splitlines()[-1]
    # The same command, without --fresh (which would start another run).
    assert last == (
        "the run stopped before every task ended: "
        f"`fleetdeck run {config} --state-dir {elsewhere} --policy wave` resumes it"
    )
    table = done.stdout.split("\n\n")[0].splitlines()
    assert table[1].split()[0] == "slow"  # the table: where the task was left
    # An interrupted run's figures are partial: no efficiency, no throughput.
    assert "(efficiency -: partial run: not every task ended)" in done.stdout
    assert "throughput        - (partial run: not every task ended)" in done.stdout
    resumed = fleetdeck("report", str(elsewhere), "--json")
    assert json.loads(resumed.stdout)["status"] == "interrupted"


def test_fresh_says_once_which_unfinished_run_it_sets_aside(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[[tasks]]\nid = "ok"\nprompt = "true"\nagent = "sh"\n')
    state = tmp_path / "state"
    journal = Journal(state)
    journal.begin_run(
        fleet="cli-test", config_path=str(config), config_json="{}", policy="wave", started_at=0
    )
    journal.close()
    fresh = fleetdeck("run", str(config), "--no-tui", "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    # What it set aside, once; at the end, where this run's journal is.
    assert fresh.stderr.splitlines() == [
        f"fleetdeck: run 1 did not finish; --fresh starts a new run "
        f"(`fleetdeck report {state} --run 1` still reads it)",
        f"run 2: journal and logs in {state}; `fleetdeck report {state}` prints this report again",
    ]
    # After a finished run, the next one reuses what still holds, and says so once.
    again = fleetdeck("run", str(config), "--no-tui")
    assert again.returncode == 0
    assert again.stderr.splitlines()[0] == (
        f"fleetdeck: run 2 in {state} finished; starting a new run that reuses its tasks "
        "that succeeded and did not change (--fresh runs all)"
    )
    assert again.stderr.splitlines()[1:] == [
        f"run 3: journal and logs in {state}; `fleetdeck report {state}` prints this report again"
    ]


def test_a_reader_that_goes_away_gets_no_traceback() -> None:
    """`fleetdeck schema | head -1`: the reader has what it wanted and went away;
    fleetdeck stops quietly, with the code a shell gives a SIGPIPE."""
    process = subprocess.Popen(
        [PYTHON, "-m", "fleetdeck", "schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # gone before the first write: start-up takes far longer
    errors = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 141
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors
