"""The policy lab: `fleetdeck simulate` and the what-if of a run under way.

Most tests use fleets whose durations are fixed by `estimate`, so the makespan,
queue waits and load can be worked out by hand; the last one checks the
simulator against a real run of the same fleet.
"""

from __future__ import annotations

import heapq
import json
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import EngineHarness, make_fleet
from fleetdeck.cli import main
from fleetdeck.config import ConfigError, Fleet, load_fleet
from fleetdeck.engine.clock import VirtualClock
from fleetdeck.engine.core import Core
from fleetdeck.engine.simulate import (
    SimulatedExecutor,
    StageModel,
    TaskProgress,
    simulate_makespan,
    simulate_run,
)
from fleetdeck.history import History, history_of, read_history, stage_models
from fleetdeck.journal import Journal
from fleetdeck.lab import PolicyFigures, predict_remaining, simulate_policies
from fleetdeck.model import Attempt, Outcome, Stage, TaskState
from fleetdeck.policy import make_policy


def lab(fleet: Fleet, history: History | None = None, **kwargs: Any) -> dict[str, PolicyFigures]:
    """Every policy's figures, by name."""
    history = history or History()
    figures = simulate_policies(
        fleet,
        stage_models(fleet, history),
        history,
        kwargs.pop("policies", ["sequential", "wave"]),
        runs=kwargs.pop("runs", 3),
        seed=kwargs.pop("seed", 1),
    )
    return {figure.policy: figure for figure in figures}


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text('[fleet]\nname = "lab"\nstate_dir = "state"\n' + body)
    return path


def test_independent_tasks_take_one_estimate_in_waves_and_three_in_sequence(
    tmp_path: Path,
) -> None:
    fleet = make_fleet(
        tmp_path,
        [{"id": f"t{i}", "agent": "sh", "estimate": 10} for i in range(3)],
        agents={"sh": {"command": ["true"], "slots": 3}},
    )
    figures = lab(fleet)
    assert figures["wave"].makespan_median == 10.0
    assert figures["sequential"].makespan_median == 30.0
    # Three at once: three in flight all along; one at a time: one.
    assert (figures["wave"].load_peak, figures["wave"].load_mean) == (3, 3.0)
    assert (figures["sequential"].load_peak, figures["sequential"].load_mean) == (1, 1.0)
    assert figures["wave"].efficiency == 1.0
    assert figures["sequential"].lower_bound == 10.0
    assert figures["sequential"].efficiency == pytest.approx(1 / 3)


def test_a_single_ci_runner_makes_a_queue_under_wave(tmp_path: Path) -> None:
    """Three 10 s agent stages at once, then 5 s of CI each through one slot: CI at
    10-15, 15-20 and 20-25, after waits of 0, 5 and 10 s."""
    fleet = make_fleet(
        tmp_path,
        [{"id": f"t{i}", "agent": "sh", "ci": "ci"} for i in range(3)],
        agents={"sh": {"command": ["true"], "slots": 3, "estimate": 10}},
        runners={"ci": {"command": ["true"], "estimate": 5}},
    )
    figures = lab(fleet)
    wave = figures["wave"]
    assert wave.makespan_median == 25.0
    assert wave.ci_wait_mean == 5.0
    assert wave.ci_wait_p95 == 10.0
    # 3 running; then 3 in flight in 2 states (queued, running) for 5 s, then 2 in
    # 2 states, then 1: (3*10 + 4*5 + 3*5 + 1*5) / 25.
    assert wave.load_peak == 4
    assert wave.load_mean == pytest.approx(70 / 25)
    sequential = figures["sequential"]
    assert sequential.makespan_median == 45.0
    assert sequential.ci_wait_mean == 0.0


def test_a_task_that_always_fails_spends_its_retries_and_blocks_its_dependent(
    tmp_path: Path,
) -> None:
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "flaky", "agent": "sh", "estimate": 4, "fail_rate": 1.0, "retries": 2},
            {"id": "after", "agent": "sh", "estimate": 4, "depends_on": ["flaky"]},
        ],
        agents={"sh": {"command": ["true"], "slots": 2}},
        retry_backoff=1.0,
    )
    for figure in lab(fleet).values():
        assert figure.completion_rate == 0.0
        assert figure.attempts == 3.0  # the first and two retries; `after` never starts
        # Two failures left for the operator: the failed task and the root it blocks.
        assert figure.load_peak == 4
        # 3 attempts of 4 s, and retry waits of 0.5-1 s then 1-2 s (equal jitter).
        assert 13.5 <= figure.makespan_median <= 15.0


def test_a_timeout_stops_the_attempt_within_the_grace_period(tmp_path: Path) -> None:
    fleet = make_fleet(
        tmp_path,
        [{"id": "slow", "agent": "sh", "estimate": 10, "timeout": 3}],
        agents={"sh": {"command": ["true"]}},
        grace_period=0.5,
    )
    figures = lab(fleet, policies=["wave"])["wave"]
    assert figures.completion_rate == 0.0
    assert figures.makespan_median == 3.5


def test_history_beats_the_estimate_and_tasks_without_either_get_the_mean(
    tmp_path: Path,
) -> None:
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "known", "agent": "sh", "estimate": 100},
            {"id": "guessed", "agent": "sh", "estimate": 7},
            {"id": "unknown", "agent": "sh"},
        ],
        agents={"sh": {"command": ["true"], "slots": 1}},
    )
    history = history_of([("known", "agent", "ok", 2.0), ("known", "agent", "ok", 4.0)])
    models = stage_models(fleet, history)
    assert models.estimated == ["guessed"]
    assert models.defaulted == ["unknown"]
    assert models.stages[0][Stage.AGENT].ok == (2.0, 4.0)
    assert models.stages[2][Stage.AGENT].ok == (3.0,)  # the mean of the known task
    # One slot: the three one after another, whatever the order.
    makespans = {lab(fleet, history, seed=seed)["wave"].makespan_median for seed in range(5)}
    assert makespans <= {2.0 + 7 + 3, 4.0 + 7 + 3, 3.0 + 7 + 3}


def agent_then_ci_fleet(tmp_path: Path, count: int) -> Fleet:
    """`count` independent tasks of an agent stage then a CI stage, no estimates."""
    return make_fleet(
        tmp_path,
        [{"id": f"t{i}", "agent": "sh", "ci": "ci"} for i in range(count)],
        agents={"sh": {"command": ["true"], "slots": count}},
        runners={"ci": {"command": ["true"], "slots": count}},
    )


def test_a_stage_kind_nobody_ran_yet_takes_the_mean_of_every_observed_attempt(
    tmp_path: Path,
) -> None:
    """Early in a first run only agents have ended: CI takes their 2 s, not the
    built-in 30 s, and a task that never ran takes the agents' mean."""
    fleet = agent_then_ci_fleet(tmp_path, 3)
    history = history_of([("t0", "agent", "ok", 2.0), ("t1", "agent", "ok", 2.0)])
    models = stage_models(fleet, history)
    assert [stage[Stage.CI].ok for stage in models.stages] == [(2.0,)] * 3
    assert models.stages[2][Stage.AGENT].ok == (2.0,)
    assert models.builtin == frozenset()
    # Every task: 2 s of agent, then 2 s of CI, side by side.
    assert predict_remaining(fleet, {}, history, ["wave"], runs=1) == {"wave": 4.0}


def test_a_stage_kind_seen_elsewhere_takes_that_kinds_mean_before_any_other(
    tmp_path: Path,
) -> None:
    fleet = agent_then_ci_fleet(tmp_path, 3)
    history = history_of(
        [
            ("t0", "agent", "ok", 10.0),
            ("t0", "ci", "ok", 1.0),
            ("t0", "ci", "ok", 3.0),  # t0's CI means 2 s
            ("t1", "ci", "failed", 4.0),  # t1's only CI attempt failed: 4 s stands for it
        ]
    )
    models = stage_models(fleet, history)
    assert models.stages[2][Stage.CI].ok == (3.0,)  # (2 + 4) / 2, not the overall mean
    assert models.stages[1][Stage.AGENT].ok == (10.0,)
    # Nothing observed at all: the built-in defaults, and they are said to be.
    bare = stage_models(fleet, History())
    assert bare.stages[0][Stage.CI].ok == (30.0,)
    assert bare.builtin == {Stage.AGENT, Stage.CI}


def test_a_task_whose_attempts_all_failed_has_history_and_is_not_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task that only ever failed (its agent stage, so its CI never ran) draws
    from its failed durations, failing every time, and is not named among the
    tasks without history; the task that never ran is."""
    config = write_config(
        tmp_path,
        '[agents.a]\ncommand = ["true"]\n[runners.ci]\ncommand = ["true"]\n'
        '[[tasks]]\nid = "fine"\nagent = "a"\nci = "ci"\n'
        '[[tasks]]\nid = "broken"\nagent = "a"\nci = "ci"\nretries = 1\n'
        '[[tasks]]\nid = "after"\nagent = "a"\ndepends_on = ["broken"]\n',
    )
    state = tmp_path / "history"
    journal = Journal(state)
    run_id = journal.begin_run(
        fleet="lab", config_path=str(config), config_json="{}", policy="wave", started_at=100.0
    )
    rows = [
        ("fine", Stage.AGENT, Outcome.OK, 2.0),
        ("fine", Stage.CI, Outcome.OK, 1.0),
        ("broken", Stage.AGENT, Outcome.FAILED, 0.5),
        ("broken", Stage.AGENT, Outcome.FAILED, 0.75),
    ]
    for attempt_id, (task, stage, outcome, seconds) in enumerate(rows, start=1):
        journal.record_attempt(
            run_id,
            Attempt(
                attempt_id=attempt_id,
                task=task,
                stage=stage,
                number=attempt_id,
                worker="a" if stage is Stage.AGENT else "ci",
                host="local",
                run_dir=str(journal.run_dir(run_id)),
                started_at=100.0,
                finished_at=100.0 + seconds,
                outcome=outcome,
            ),
        )
    journal.close()
    broken = stage_models(load_fleet(config), read_history(state)).stages[1][Stage.AGENT]
    assert (broken.ok, broken.failed, broken.fail_rate) == ((0.5, 0.75), (0.5, 0.75), 1.0)
    assert main(["simulate", str(config), "--from", str(state), "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "no history and no estimate (the mean of what others took): after\n" in out
    assert "broken" not in out


def test_observed_failures_set_the_failure_rate_and_their_own_durations() -> None:
    history = history_of(
        [
            ("t", "agent", "ok", 5.0),
            ("t", "agent", "failed", 1.0),
            ("t", "agent", "timeout", 1.0),
            ("t", "agent", "ok", 5.0),
            ("t", "agent", "cancelled", 0.2),  # the operator's doing: not counted
            ("t", "agent", "lost", 0.3),
        ]
    )
    model = history.observed[("t", Stage.AGENT)].model()
    assert model.fail_rate == 0.5
    rng = random.Random(3)
    draws = [model.draw(rng) for _ in range(400)]
    assert {draw for draw in draws} == {(5.0, True), (1.0, False)}
    assert 150 < sum(1 for _, ok in draws if ok) < 250


def test_the_history_is_read_from_the_journal_without_writing_to_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    journal = Journal(state)
    run_id = journal.begin_run(
        fleet="f", config_path="f.toml", config_json="{}", policy="wave", started_at=100.0
    )
    for attempt_id, (outcome, seconds) in enumerate([(Outcome.OK, 3.0), (Outcome.FAILED, 1.0)]):
        journal.record_attempt(
            run_id,
            Attempt(
                attempt_id=attempt_id + 1,
                task="t",
                stage=Stage.AGENT,
                number=attempt_id + 1,
                worker="sh",
                host="local",
                run_dir=str(journal.run_dir(run_id)),
                started_at=100.0,
                finished_at=100.0 + seconds,
                outcome=outcome,
            ),
        )
    journal.close()
    before = sorted(path.name for path in state.iterdir())
    history = read_history(state)
    assert sorted(path.name for path in state.iterdir()) == before
    assert history.observed[("t", Stage.AGENT)].ok == (3.0,)
    assert history.observed[("t", Stage.AGENT)].failed == (1.0,)
    assert history.learned == {"t": 3.0}
    assert history.runs == 1


def test_json_lines_parse_one_per_policy_and_a_seed_repeats_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        '[agents.a]\ncommand = ["true"]\nslots = 2\n'
        + "".join(
            f'[[tasks]]\nid = "t{i}"\nagent = "a"\nestimate = {i + 1}\nfail_rate = 0.3\n'
            "retries = 1\n"
            for i in range(5)
        ),
    )
    argv = ["simulate", str(config), "--json", "--runs", "4", "--seed", "11"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    lines = [json.loads(line) for line in first.splitlines()]
    assert [line["policy"] for line in lines] == ["sequential", "wave", "pipelined", "adaptive"]
    assert all(line["runs"] == 4 and line["seed"] == 11 for line in lines)
    assert lines[0]["no_history"]["estimated"] == [f"t{i}" for i in range(5)]
    assert main(argv) == 0
    assert capsys.readouterr().out == first
    assert main([*argv[:-1], "12"]) == 0
    assert capsys.readouterr().out != first


def test_the_text_output_names_the_tasks_without_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        '[agents.a]\ncommand = ["true"]\n[[tasks]]\nid = "guess"\nagent = "a"\n'
        '[[tasks]]\nid = "known"\nagent = "a"\nestimate = 5\n',
    )
    assert main(["simulate", str(config), "--policy", "wave", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "no history and no estimate (a default duration): guess" in out
    assert "no history, by their estimate: known" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("wave")]
    assert rows and rows[0][1] == "1m05s"  # the default 60 s agent stage, then 5 s


@pytest.mark.parametrize("where", ["missing", "file", "empty-dir", "not-a-journal"])
def test_a_bad_from_dir_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    config = write_config(
        tmp_path, '[agents.a]\ncommand = ["true"]\n[[tasks]]\nid = "t"\nagent = "a"\n'
    )
    state = tmp_path / where
    if where == "file":
        state.write_text("x")
    elif where != "missing":
        state.mkdir()
    if where == "not-a-journal":
        (state / "journal.sqlite3").write_text("not a database at all, " * 100)
    assert main(["simulate", str(config), "--from", str(state)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith(f"fleetdeck: {state}")


def test_config_refuses_estimates_and_fail_rates_out_of_range(tmp_path: Path) -> None:
    for fields in ({"estimate": 0}, {"estimate": -1}, {"fail_rate": 1.5}, {"fail_rate": -0.1}):
        with pytest.raises(ConfigError) as caught:
            make_fleet(tmp_path, [{"id": "t", "agent": "sh", **fields}])
        assert f"tasks[0].{next(iter(fields))}" in str(caught.value)
    with pytest.raises(ConfigError, match=r"agents\.sh\.fail_rate"):
        make_fleet(
            tmp_path,
            [{"id": "t", "agent": "sh"}],
            agents={"sh": {"command": ["true"], "fail_rate": 2}},
        )


def list_schedule(durations: list[float], deps: list[list[int]], slots: int) -> float:
    """The ready rule written out on its own: whenever slots are free, the ready
    tasks with the heaviest chain below them start (ties: config order)."""
    n = len(durations)
    below = list(durations)
    for node in reversed(range(n)):  # deps point to earlier tasks
        for dep in deps[node]:
            below[dep] = max(below[dep], durations[dep] + below[node])
    waiting = [len(parents) for parents in deps]
    ready = [(-below[node], node) for node in range(n) if not waiting[node]]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    clock = 0.0
    while ready or running:
        while ready and len(running) < slots:
            node = heapq.heappop(ready)[1]
            heapq.heappush(running, (clock + durations[node], node))
        clock = running[0][0]
        while running and running[0][0] <= clock:
            done = heapq.heappop(running)[1]
            for child in range(n):
                if done in deps[child]:
                    waiting[child] -= 1
                    if not waiting[child]:
                        heapq.heappush(ready, (-below[child], child))
    return clock


@pytest.mark.parametrize("seed", range(6))
def test_a_random_dag_takes_what_the_ready_rule_says(tmp_path: Path, seed: int) -> None:
    """With durations known (and ranked by, as after a first run), a wave run is the
    list schedule of the ready rule: the core adds nothing and loses nothing."""
    rng = random.Random(seed)
    durations = [float(rng.randint(1, 40)) for _ in range(40)]
    deps = [sorted(rng.sample(range(i), min(i, rng.choice((0, 1, 1, 2, 3))))) for i in range(40)]
    tasks = [
        {
            "id": f"t{i}",
            "agent": "sh",
            "estimate": durations[i],
            "depends_on": [f"t{d}" for d in deps[i]],
        }
        for i in range(40)
    ]
    slots = rng.randint(2, 5)
    fleet = make_fleet(tmp_path, tasks, agents={"sh": {"command": ["true"], "slots": slots}})
    models = stage_models(fleet, History()).stages
    run = simulate_run(fleet, "wave", models, estimates=durations, rng=random.Random(0))
    assert run.makespan == list_schedule(durations, deps, slots)
    assert run.report.completion_rate == 1.0
    alone = simulate_makespan(fleet, "wave", models, estimates=durations, rng=random.Random(0))
    assert alone == run.makespan


# --- what is left of a run under way ---------------------------------------------------


def three_tens(tmp_path: Path, slots: int) -> Fleet:
    return make_fleet(
        tmp_path,
        [{"id": f"t{i}", "agent": "sh", "estimate": 10} for i in range(3)],
        agents={"sh": {"command": ["true"], "slots": slots}},
    )


def test_predict_remaining_keeps_what_is_done_and_the_time_already_run(tmp_path: Path) -> None:
    progress = {
        "t0": TaskProgress(TaskState.SUCCEEDED, attempts=1),
        "t1": TaskProgress(TaskState.RUNNING, attempts=1, elapsed=4.0),
    }
    fleet = three_tens(tmp_path, slots=3)
    # t1 has 6 s left; t2 starts now (wave) or after t1 (sequential).
    assert predict_remaining(fleet, progress, History(), ["wave", "sequential"]) == {
        "wave": 10.0,
        "sequential": 16.0,
    }
    assert predict_remaining(three_tens(tmp_path, 1), progress, History(), ["wave"]) == {
        "wave": 16.0
    }


def test_predict_remaining_from_an_engine_core_in_the_middle_of_a_run(tmp_path: Path) -> None:
    fleet = three_tens(tmp_path, slots=2)
    clock = VirtualClock()
    models = [{Stage.AGENT: StageModel.fixed(10.0)}] * 3
    executor = SimulatedExecutor(fleet, clock, models, random.Random(0))
    core = Core(
        fleet,
        clock=clock,
        effects=executor,
        policy=make_policy("wave"),
        estimates=[1.0] * 3,
    )
    executor.bind(core)
    core.start()
    core.schedule()
    clock.advance(4.0)  # t0 and t1 have run 4 s of their 10; t2 waits for a slot
    assert [task.state for task in core.tasks] == [
        TaskState.RUNNING,
        TaskState.RUNNING,
        TaskState.READY,
    ]
    predicted = predict_remaining(fleet, core, History(), ["wave", "sequential"])
    # Both keep running (switching policy never stops work in flight): 6 s, then t2.
    assert predicted == {"wave": 16.0, "sequential": 16.0}


def test_predict_remaining_leaves_failed_tasks_and_their_dependents_alone(
    tmp_path: Path,
) -> None:
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "broken", "agent": "sh", "estimate": 10},
            {"id": "after", "agent": "sh", "estimate": 10, "depends_on": ["broken"]},
            {"id": "other", "agent": "sh", "estimate": 3},
        ],
        agents={"sh": {"command": ["true"], "slots": 2}},
    )
    progress = {"broken": TaskProgress(TaskState.FAILED, attempts=1, failures=1)}
    assert predict_remaining(fleet, progress, History(), ["wave"]) == {"wave": 3.0}


# --- against a real run -------------------------------------------------------------------


@pytest.mark.slow
async def test_simulate_predicts_a_real_run_from_its_history(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """Run a fleet for real under wave, predict wave and sequential from its journal,
    then run it for real under sequential: both predictions within 15%."""

    def task(task_id: str, seconds: float, *deps: str, ci: bool = False) -> dict[str, Any]:
        fields: dict[str, Any] = {"id": task_id, "agent": "sh", "prompt": f"sleep {seconds}"}
        return {**fields, "depends_on": list(deps), **({"ci": "ci"} if ci else {})}

    tasks = [
        task("schema", 0.6, ci=True),
        task("api", 0.8, "schema", ci=True),
        task("ui", 1.0),
        task("login", 0.6, "api", "ui", ci=True),
        task("docs", 0.7),
    ]
    runners = {"ci": {"command": ["sh", "-c", "sleep 0.5"], "slots": 1}}
    agents = {"sh": {"command": ["sh", "-c", "{prompt}"], "slots": 2}}
    fleet = make_fleet(tmp_path, tasks, agents=agents, runners=runners)
    real_wave = await harness.run(fleet)
    assert real_wave.result.exit_code == 0
    history = read_history(real_wave.state_dir)
    predicted = lab(fleet, history, runs=5)
    wave = real_wave.result.report.makespan
    assert predicted["wave"].makespan_median == pytest.approx(wave, rel=0.15)
    assert predicted["wave"].completion_rate == 1.0

    harness.close()  # the next run opens the state dir again
    harness.journals.clear()
    sequential_fleet = make_fleet(
        tmp_path, tasks, agents=agents, runners=runners, policy="sequential"
    )
    real_sequential = await harness.run(sequential_fleet)
    assert real_sequential.result.exit_code == 0
    sequential = real_sequential.result.report.makespan
    assert predicted["sequential"].makespan_median == pytest.approx(sequential, rel=0.15)
    # The two policies really differ here, so the agreement says something.
    assert sequential > 1.3 * wave


def test_the_journal_of_a_state_dir_in_use_is_read_beside_its_writer(tmp_path: Path) -> None:
    """A supervisor holds the journal open (its -wal file exists): read-only mode."""
    state = tmp_path / "state"
    journal = Journal(state)
    try:
        journal.begin_run(
            fleet="f", config_path="f", config_json="{}", policy="wave", started_at=1.0
        )
        assert (state / "journal.sqlite3-wal").exists()
        assert read_history(state).runs == 1
    finally:
        journal.close()
    with sqlite3.connect(state / "journal.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)


def test_the_lab_never_imports_textual() -> None:
    """What the TUI will call for its what-if line, and the command, load without it."""
    code = (
        "import sys, fleetdeck.lab, fleetdeck.history, fleetdeck.engine.simulate\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
