"""Resuming a run from the journal: what is kept, what runs again, what the CLI says."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from conftest import make_fleet
from fleetdeck.config import Fleet
from fleetdeck.engine import Engine, RunResult
from fleetdeck.executors import build_executors
from fleetdeck.journal import Journal
from fleetdeck.model import Event, EventKind, TaskState
from fleetdeck.resume import choose_run
from test_cli_run import fleetdeck, write_config


async def run_once(
    fleet: Fleet, state: Path, *, resume: bool, stop_on: str | None = None
) -> tuple[RunResult, list[Event], Engine]:
    """One supervisor on `state`: resume the latest unfinished run or start one;
    with `stop_on`, stop (as Ctrl-C does) once that task's attempt has started."""
    journal = Journal(state)
    try:
        previous = choose_run(journal.latest_run(), fleet.name, str(state)) if resume else None
        engine = Engine(fleet, journal=journal, executors=build_executors(fleet), resume=previous)
        events: list[Event] = []

        def listen(event: Event) -> None:
            events.append(event)
            if event.kind is EventKind.ATTEMPT_STARTED and event.task == stop_on:
                asyncio.get_running_loop().call_later(0.2, engine.request_stop)

        engine.subscribe(listen)
        result = await engine.run()
        return result, events, engine
    finally:
        journal.close()


def counting(task: str, marks: Path, then: str = "true") -> dict[str, Any]:
    """A task that appends its name to `marks/TASK` each time it runs, writes an
    output, then runs `then`."""
    script = (
        f'echo run >> {marks}/{task}; cat "$FLEETDECK_INPUTS" > {marks}/{task}.inputs; '
        f'echo out-{task} > "$FLEETDECK_OUTPUT"; {then}'
    )
    return {"id": task, "agent": "sh", "prompt": script}


def runs(marks: Path, task: str) -> int:
    path = marks / task
    return len(path.read_text().splitlines()) if path.exists() else 0


def chain(tmp_path: Path, marks: Path, *, slow: str = "sleep 30", a_extra: str = "") -> Fleet:
    return make_fleet(
        tmp_path,
        [
            counting("a", marks, f"true {a_extra}".strip()),
            {**counting("b", marks, slow), "depends_on": ["a"], "retries": 1},
            {**counting("c", marks), "depends_on": ["b"]},
        ],
        grace_period=0.2,
    )


async def test_an_interrupted_run_resumes_without_rerunning_what_succeeded(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    first, _events, _engine = await run_once(
        chain(tmp_path, marks), state, resume=True, stop_on="b"
    )
    assert first.exit_code == 130
    assert (runs(marks, "a"), runs(marks, "b"), runs(marks, "c")) == (1, 1, 0)

    second, events, engine = await run_once(chain(tmp_path, marks, slow="true"), state, resume=True)
    # b's command differs ("true" instead of "sleep 30"): it is not done, so it
    # reran anyway; a is untouched and stays done.
    assert second.exit_code == 0
    assert second.run_id == first.run_id
    assert (runs(marks, "a"), runs(marks, "b"), runs(marks, "c")) == (1, 2, 1)
    # a's output, written in the first supervisor's life, still reaches b.
    assert json.loads((marks / "b.inputs").read_text()) == {"a": "out-a\n"}
    resumed = events[0]  # the first thing a resuming supervisor says
    assert resumed.kind is EventKind.RUN_RESUMED
    assert resumed.data["done"] == 1
    assert resumed.data["to_go"] == 2
    assert resumed.data["changed"] == ["b"]
    assert not [e for e in events if e.kind is EventKind.RUN_STARTED]
    assert all(task.state is TaskState.SUCCEEDED for task in engine.tasks())
    # b's attempts go on numbering: its second attempt has a log of its own.
    assert sorted(p.name for p in (state / "runs" / "1").glob("b.*.agent.log")) == [
        "b.1.agent.log",
        "b.2.agent.log",
    ]
    db = sqlite3.connect(state / "journal.sqlite3")
    assert db.execute("SELECT run_id, status, exit_code FROM runs").fetchall() == [
        (1, "finished", 0)
    ]


async def test_an_unchanged_interrupted_task_reruns_without_spending_a_retry(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    fleet = make_fleet(
        tmp_path,
        [{**counting("slow", marks, "sleep 0.6"), "retries": 0}],
        grace_period=0.2,
    )
    first, _, _ = await run_once(fleet, state, resume=True, stop_on="slow")
    assert first.exit_code == 130
    second, events, _ = await run_once(fleet, state, resume=True)
    # retries = 0, yet it runs again: an interruption is not a failure.
    assert second.exit_code == 0
    assert runs(marks, "slow") == 2
    ready = [e for e in events if e.kind is EventKind.TASK_READY]
    assert ready[0].data["reason"] == "resumed"


async def test_a_changed_task_reruns_with_everything_downstream(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    first, _, _ = await run_once(chain(tmp_path, marks), state, resume=True, stop_on="b")
    assert first.exit_code == 130
    # a changes: a, and b and c below it, run again; nothing is kept.
    fleet = chain(tmp_path, marks, slow="true", a_extra="changed")
    second, events, _ = await run_once(fleet, state, resume=True)
    assert second.exit_code == 0
    assert (runs(marks, "a"), runs(marks, "b"), runs(marks, "c")) == (2, 2, 1)
    (resumed,) = [e for e in events if e.kind is EventKind.RUN_RESUMED]
    assert resumed.data["changed"] == ["a", "b"]
    assert resumed.data["done"] == 0


async def test_a_task_the_run_never_got_to_may_change(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    first, _, _ = await run_once(chain(tmp_path, marks), state, resume=True, stop_on="b")
    assert first.exit_code == 130  # c has no event yet: it was never ready
    fleet = make_fleet(
        tmp_path,
        [
            counting("a", marks),
            {**counting("b", marks), "depends_on": ["a"], "retries": 1},
            {**counting("c", marks, "echo edited"), "depends_on": ["b"]},
        ],
        grace_period=0.2,
    )
    second, events, _ = await run_once(fleet, state, resume=True)
    assert second.exit_code == 0
    (resumed,) = [e for e in events if e.kind is EventKind.RUN_RESUMED]
    assert resumed.data["changed"] == ["b", "c"]
    assert (runs(marks, "a"), runs(marks, "b"), runs(marks, "c")) == (1, 2, 1)


async def test_a_failed_task_stays_failed_and_its_dependents_blocked(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    fleet = make_fleet(
        tmp_path,
        [
            counting("bad", marks, "exit 1"),
            {**counting("after", marks), "depends_on": ["bad"]},
            counting("slow", marks, "sleep 30"),
        ],
        grace_period=0.2,
    )
    first, _, _ = await run_once(fleet, state, resume=True, stop_on="slow")
    assert first.exit_code == 130
    assert runs(marks, "bad") == 1
    second, _events, engine = await run_once(
        make_fleet(
            tmp_path,
            [
                counting("bad", marks, "exit 1"),
                {**counting("after", marks), "depends_on": ["bad"]},
                counting("slow", marks, "true"),
            ],
            grace_period=0.2,
        ),
        state,
        resume=True,
    )
    assert second.exit_code == 1
    assert runs(marks, "bad") == 1  # its retries were spent: it is not run again
    assert engine.task("bad").state is TaskState.FAILED
    assert engine.task("after").state is TaskState.BLOCKED
    assert engine.task("slow").state is TaskState.SUCCEEDED


def test_cli_starts_afresh_after_a_finished_run_of_another_fleet(tmp_path: Path) -> None:
    """A finished run is never resumed; its successes are reused only by the same
    fleet (see test_rerun.py): another fleet's run starts from scratch."""
    body = """
[[tasks]]
id = "one"
prompt = "echo one >> MARKS"
agent = "sh"
""".replace("MARKS", str(tmp_path / "marks"))
    config = write_config(tmp_path, body)
    first = fleetdeck("run", str(config), "--no-tui")
    assert first.returncode == 0, first.stderr
    config.write_text(config.read_text().replace('name = "cli-test"', 'name = "other"'))
    second = fleetdeck("run", str(config), "--no-tui")
    assert second.returncode == 0, second.stderr
    # A new run after a finished one is what `run` does: nothing to say about it
    # but, as after every headless run, where its journal is.
    assert second.stderr.splitlines() == [
        f"run 2: journal and logs in {tmp_path / 'state'}; "
        f"`fleetdeck report {tmp_path / 'state'}` prints this report again"
    ]
    third = fleetdeck("run", str(config), "--no-tui", "--fresh")
    assert third.returncode == 0
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    assert [row[0] for row in db.execute("SELECT run_id FROM runs")] == [1, 2, 3]
    assert (tmp_path / "marks").read_text() == "one\n" * 3


def test_cli_refuses_an_unfinished_run_of_another_fleet(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[[tasks]]\nid = "one"\nprompt = "true"\nagent = "sh"\n')
    db_dir = tmp_path / "state"
    journal = Journal(db_dir)
    journal.begin_run(
        fleet="someone-else", config_path="x.toml", config_json="{}", policy="wave", started_at=0
    )
    journal.close()
    refused = fleetdeck("run", str(config), "--no-tui")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "unfinished run 1 of fleet 'someone-else', not 'cli-test'" in refused.stderr
    assert "--fresh" in refused.stderr
    fresh = fleetdeck("run", str(config), "--no-tui", "--fresh")
    assert fresh.returncode == 0, fresh.stderr


async def test_work_queued_for_ci_rejoins_the_queue_without_rerunning_its_agent(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    flag = tmp_path / "ci-may-pass"
    # One CI slot: the first task's CI blocks, the second waits in the queue.
    ci = f"echo ci >> {marks}/$FLEETDECK_TASK.ci; until [ -e {flag} ]; do sleep 0.05; done"
    fleet = make_fleet(
        tmp_path,
        [{**counting("one", marks), "ci": "ci"}, {**counting("two", marks), "ci": "ci"}],
        runners={"ci": {"command": ["sh", "-c", ci], "slots": 1}},
        grace_period=0.2,
    )
    queued: list[str] = []

    def stop_when_both_wait(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.CI_QUEUED:
            queued.append(str(event.task))
            if len(queued) == 2:
                asyncio.get_running_loop().call_later(0.2, engine.request_stop)

    journal = Journal(state)
    engine = Engine(fleet, journal=journal, executors=build_executors(fleet))
    engine.subscribe(lambda event: stop_when_both_wait(engine, event))
    first = await engine.run()
    journal.close()
    assert first.exit_code == 130
    flag.write_text("")
    second, events, _ = await run_once(fleet, state, resume=True)
    assert second.exit_code == 0
    waiting = queued[1]
    # The task that waited for CI did not run its agent again; the one whose CI
    # attempt was interrupted did (a CI attempt always follows its own agent run).
    assert runs(marks, waiting) == 1
    assert runs(marks, queued[0]) == 2
    started = [e for e in events if e.kind is EventKind.ATTEMPT_STARTED and e.task == waiting]
    assert [e.data["stage"] for e in started] == ["ci"]


def test_after_a_crash_an_attempt_of_a_changed_task_is_stopped_not_reattached(
    tmp_path: Path,
) -> None:
    """The supervisor dies under a running attempt; the task's command is then edited.
    The next supervisor stops the old attempt (it runs the old definition) and runs
    the new one; an unchanged task's attempt is taken up (reattached, or recovered
    from its status if it ended before the restart on a slow machine)."""
    import signal
    import subprocess

    from conftest import PYTHON, alive, wait_for_file

    old_pid = tmp_path / "old.pid"
    kept_pid = tmp_path / "kept.pid"
    body = f"""
[[tasks]]
id = "edited"
prompt = "echo $$ > {old_pid}.tmp; mv {old_pid}.tmp {old_pid}; exec sleep 60"
agent = "sh"

[[tasks]]
id = "kept"
prompt = "echo $$ > {kept_pid}.tmp; mv {kept_pid}.tmp {kept_pid}; sleep 2"
agent = "sh"
"""
    config = write_config(tmp_path, body)
    argv = [PYTHON, "-m", "fleetdeck", "run", str(config), "--no-tui"]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_file(old_pid)
    wait_for_file(kept_pid)
    first.send_signal(signal.SIGKILL)
    first.wait()
    stale, kept = int(old_pid.read_text()), int(kept_pid.read_text())
    assert alive(stale) and alive(kept)  # the attempts outlive their supervisor
    config.write_text(config.read_text().replace("exec sleep 60", "echo edited"))
    second = fleetdeck("run", str(config), "--json")
    assert second.returncode == 0, second.stderr
    assert not alive(stale)
    events = [json.loads(line) for line in second.stdout.splitlines()]
    assert events[0]["event"] == "run_resumed"
    assert events[0]["changed"] == ["edited"]
    assert events[0]["reattached"] + events[0]["recovered"] == 1
    finished = [e for e in events if e["event"] == "attempt_finished"]
    assert {(e["task"], e["attempt"], e["outcome"]) for e in finished} == {
        ("edited", 1, "cancelled"),
        ("edited", 2, "ok"),
        ("kept", 1, "ok"),
    }
