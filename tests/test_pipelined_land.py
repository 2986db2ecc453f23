"""The pipelined policy on a real repository (the Zuul model): a dependent starts
on its upstream's unlanded branch before the upstream's CI ended, lands after
it with each change once (in every way of landing), and is preempted, its
process stopped and its worktree made afresh, when the upstream's CI fails."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import EngineHarness, Run, alive
from fleetdeck.config import Fleet, build_fleet
from fleetdeck.engine import Engine
from fleetdeck.engine.shell import estimated_durations
from fleetdeck.engine.simulate import StageModel, simulate_run
from fleetdeck.journal import Journal
from fleetdeck.model import Event, EventKind, Outcome, Stage
from fleetdeck.report import load_run
from fleetdeck.resume import choose_run
from git_support import commit_file, git, make_repo
from test_land import assert_nothing_left, outcomes
from test_worktrees import landing


def pipelined_fleet(
    tmp_path: Path, repo: Path, tasks: list[dict[str, Any]], runner: str, **repo_keys: Any
) -> Fleet:
    data = {
        "fleet": {
            "name": "stack",
            "state_dir": "state",
            "grace_period": 0.3,
            "retry_backoff": 0.01,
            "policy": "pipelined",
        },
        "repo": {"path": str(repo), **repo_keys},
        "agents": {"sh": {"command": ["sh", "-c", "{prompt}"], "slots": 4}},
        "runners": {"t": {"command": ["sh", "-c", runner], "slots": 2}},
        "tasks": tasks,
    }
    return build_fleet(data, source="stack.toml", base_dir=tmp_path)


@pytest.mark.parametrize("mode", ["rebase", "merge", "squash"])
async def test_a_dependent_starts_on_its_upstreams_branch_and_lands_after_it_once(
    harness: EngineHarness, tmp_path: Path, mode: str
) -> None:
    repo = make_repo(tmp_path / "repo")
    seen = tmp_path / "b-saw"
    # a's CI holds until b's agent has run on a's change; every CI checks both files.
    runner = (
        f'if [ "$FLEETDECK_TASK" = a ]; then until [ -e {seen} ]; do sleep 0.02; done; fi; '
        'test "$(cat a.txt)" = a'
    )
    tasks = [
        {"id": "a", "agent": "sh", "prompt": "add a\necho a > a.txt", "ci": "t"},
        {
            "id": "b",
            "agent": "sh",
            "prompt": f"add b\ncat a.txt > b.txt && cp a.txt {seen}",
            "ci": "t",
            "depends_on": ["a"],
        },
    ]
    fleet = pipelined_fleet(tmp_path, repo, tasks, runner, land=mode)
    mine: list[str] = []

    def during(engine: Engine, event: Event) -> None:
        started = event.kind is EventKind.ATTEMPT_STARTED
        if started and event.task == "a" and event.data["stage"] == "ci" and not mine:
            # The user commits meanwhile: a lands rebased (squashed, merged) on
            # it, not as the commit b started on.
            mine.append(commit_file(repo, "mine.txt", "mine\n", "mine"))

    run = await harness.run(fleet, during=during, **landing(fleet, tmp_path))
    assert run.result.exit_code == 0, run.events
    assert run.state("a") == run.state("b") == "succeeded"
    assert run.engine.snapshot().policy_detail == "pipelined"
    # b started on a's agent output, before a's CI ended, and saw its change.
    b_started = run.index(EventKind.ATTEMPT_STARTED, "b", stage="agent")
    assert b_started < run.index(EventKind.ATTEMPT_FINISHED, "a", stage="ci")
    assert seen.read_text() == "a\n"
    # b joined the train only once a had landed.
    assert run.index(EventKind.TASK_LANDED, "a") < run.index(
        EventKind.ATTEMPT_STARTED, "b", stage="merge"
    )
    (held,) = [e for e in run.of(EventKind.MERGE_QUEUED, "b") if "after" in e.data]
    assert held.data["after"] == "a"
    # The target moved under b's CI (a landed as another commit): CI ran again on top.
    assert outcomes(run, "b", "merge") == ["retest", "ok"]
    assert outcomes(run, "b", "ci") == ["ok", "ok"]
    # Each change once, in order, on top of the user's commit.
    tip = git(repo, "rev-parse", "main")
    assert git(repo, "merge-base", "--is-ancestor", mine[0], tip) == ""
    assert sorted(git(repo, "ls-tree", "--name-only", "main").split()) == [
        "README", "a.txt", "b.txt", "mine.txt"
    ]  # fmt: skip
    assert git(repo, "show", "main:b.txt") == "a"
    subjects = git(repo, "log", "--format=%s", "main").splitlines()
    assert subjects.count("a: add a") == 1 and subjects.count("b: add b") == 1
    first_parents = git(repo, "log", "--first-parent", "--format=%s", "main").splitlines()
    if mode == "merge":
        assert first_parents == ["Merge fleetdeck/b", "Merge fleetdeck/a", "mine", "initial"]
    else:
        assert first_parents == ["b: add b", "a: add a", "mine", "initial"]
        # b's landed commit is b's change alone.
        assert git(repo, "diff", "--name-only", "main~1", "main") == "b.txt"
    assert git(repo, "status", "--porcelain") == ""
    assert_nothing_left(repo)


async def test_an_upstream_ci_failure_preempts_the_stacked_dependent_which_lands_on_the_fix(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    pid = tmp_path / "b-pid"
    failed = tmp_path / "a-ci-failed"
    # a's agent writes its attempt number; b's first attempt leaves a stray file
    # in its worktree and hangs (its pid kept), its second copies a's change.
    b_agent = (
        f"add b\nif [ -e {pid} ]; then cat a.txt > b.txt; ls > listing.txt; "
        f"else echo stray > stray.txt; echo $$ > {pid}; exec sleep 60; fi"
    )
    runner = (
        f'if [ "$FLEETDECK_TASK" = a ] && [ ! -e {failed} ]; then '
        f"until [ -s {pid} ]; do sleep 0.02; done; touch {failed}; exit 1; fi; "
        "test -f a.txt"
    )
    tasks = [
        {
            "id": "a",
            "agent": "sh",
            "prompt": 'add a\necho "a-$FLEETDECK_ATTEMPT" > a.txt',
            "ci": "t",
            "retries": 1,
        },
        {"id": "b", "agent": "sh", "prompt": b_agent, "ci": "t", "depends_on": ["a"]},
    ]
    fleet = pipelined_fleet(tmp_path, repo, tasks, runner)
    bases: list[str] = []

    def during(engine: Engine, event: Event) -> None:
        started = event.kind is EventKind.ATTEMPT_STARTED
        if started and event.task == "b" and event.data["stage"] == "agent":
            worktree = tmp_path / "state" / "worktrees" / "b"
            bases.append((worktree / "a.txt").read_text())
            assert not (worktree / "stray.txt").exists()  # fresh, every time

    run = await harness.run(fleet, during=during, **landing(fleet, tmp_path))
    assert run.result.exit_code == 0, run.events
    assert run.state("a") == run.state("b") == "succeeded"
    # b's first attempt ran on a's first change and was preempted, its process gone.
    b_agents = [e.data["outcome"] for e in run.of(EventKind.ATTEMPT_FINISHED, "b", stage="agent")]
    assert b_agents == [Outcome.PREEMPTED, Outcome.OK]
    assert not alive(int(pid.read_text()))
    (requeued,) = run.of(EventKind.TASK_REQUEUED, "b", cause="preempted")
    assert "'a' failed in ci" in requeued.data["reason"]
    assert run.of(EventKind.RETRY_SCHEDULED, "b") == []
    # It ran again on a's fixed change, in a fresh worktree, and landed after a.
    assert bases == ["a-1\n", "a-2\n"]
    assert git(repo, "show", "main:b.txt") == "a-2"
    assert "stray.txt" not in git(repo, "show", "main:listing.txt").split()
    assert git(repo, "log", "--format=%s", "main").splitlines() == [
        "b: add b", "a: add a", "initial"
    ]  # fmt: skip
    assert run.index(EventKind.TASK_LANDED, "a") < run.index(EventKind.TASK_LANDED, "b")
    assert_nothing_left(repo)


async def test_a_stack_three_deep_lands_in_order_each_change_once(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """c stands on b's branch, which stands on a's: squashed one by one, each
    lands its own change alone, after the one it stood on."""
    repo = make_repo(tmp_path / "repo")
    gate = tmp_path / "c-ran"
    # a's and b's CI hold until c's agent has run on both their changes.
    runner = (
        f'if [ "$FLEETDECK_TASK" != c ]; then until [ -e {gate} ]; do sleep 0.02; done; fi; '
        "test -f a.txt"
    )
    tasks = [
        {"id": "a", "agent": "sh", "prompt": "add a\necho a > a.txt", "ci": "t"},
        {
            "id": "b",
            "agent": "sh",
            "prompt": "add b\ncat a.txt > b.txt",
            "ci": "t",
            "depends_on": ["a"],
        },
        {
            "id": "c",
            "agent": "sh",
            "prompt": f"add c\ncat a.txt b.txt > c.txt && touch {gate}",
            "ci": "t",
            "depends_on": ["b"],
        },
    ]
    fleet = pipelined_fleet(tmp_path, repo, tasks, runner, land="squash")
    run = await harness.run(fleet, **landing(fleet, tmp_path))
    assert run.result.exit_code == 0, run.events
    assert git(repo, "show", "main:c.txt") == "a\na"
    assert run.index(EventKind.ATTEMPT_STARTED, "c", stage="agent") < run.index(
        EventKind.ATTEMPT_FINISHED, "a", stage="ci"
    )
    landed = [e.task for e in run.of(EventKind.TASK_LANDED)]
    assert landed == ["a", "b", "c"]
    assert git(repo, "log", "--format=%s", "main").splitlines() == [
        "c: add c", "b: add b", "a: add a", "initial"
    ]  # fmt: skip
    for commit, name in (("main", "c.txt"), ("main~1", "b.txt"), ("main~2", "a.txt")):
        assert git(repo, "diff", "--name-only", f"{commit}~1", commit) == name
    assert_nothing_left(repo)


async def test_the_simulator_and_a_real_run_on_a_repo_count_the_same_compound_failures(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """a's CI always fails (after 0.8 s); b (agent 0.1 s, CI 3 s) stands on a's
    branch and c (agent 3 s) on b's: two compound failures, in both."""
    repo = make_repo(tmp_path / "repo")
    runner = 'if [ "$FLEETDECK_TASK" = a ]; then sleep 0.8; exit 1; fi; sleep 3'
    tasks = [
        {"id": "a", "agent": "sh", "prompt": "echo a > a.txt", "ci": "t", "retries": 0},
        {"id": "b", "agent": "sh", "prompt": "sleep 0.1; echo b > b.txt", "ci": "t",
         "depends_on": ["a"]},
        {"id": "c", "agent": "sh", "prompt": "sleep 3; echo c > c.txt", "depends_on": ["b"]},
    ]  # fmt: skip
    fleet = pipelined_fleet(tmp_path, repo, tasks, runner)
    run = await harness.run(fleet, **landing(fleet, tmp_path))
    real = load_run(run.state_dir).report
    assert {task: run.state(task) for task in "abc"} == {
        "a": "failed",
        "b": "blocked",
        "c": "blocked",
    }
    merge = StageModel.fixed(0.0)
    models = [
        {Stage.AGENT: StageModel.fixed(0.0), Stage.CI: StageModel.fixed(0.8, 1.0),
         Stage.MERGE: merge},
        {Stage.AGENT: StageModel.fixed(0.1), Stage.CI: StageModel.fixed(3.0), Stage.MERGE: merge},
        {Stage.AGENT: StageModel.fixed(3.0), Stage.MERGE: merge},
    ]  # fmt: skip
    simulated = simulate_run(
        fleet, "pipelined", models, estimates=estimated_durations(fleet, {}), rng=random.Random(1)
    ).report
    assert real.compound_failures == simulated.compound_failures == 2
    assert real.preempted_attempts == simulated.preempted_attempts == 2
    assert git(repo, "log", "--format=%s", "main") == "initial"  # nothing landed


async def test_a_run_stopped_while_a_dependent_waits_for_its_upstream_to_land_is_taken_up(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """b, done with its CI on a's unlanded branch, waits for a (whose CI holds)
    when the supervisor stops. Taken up by a new one, b still lands after a,
    with its own change alone (its fork found again beside its worktree)."""
    repo = make_repo(tmp_path / "repo")
    go = tmp_path / "go"
    runner = (
        f'if [ "$FLEETDECK_TASK" = a ]; then until [ -e {go} ]; do sleep 0.02; done; fi; '
        "test -f a.txt"
    )
    tasks = [
        {"id": "a", "agent": "sh", "prompt": "add a\necho a > a.txt", "ci": "t"},
        {"id": "b", "agent": "sh", "prompt": "add b\ncat a.txt > b.txt", "ci": "t",
         "depends_on": ["a"]},
    ]  # fmt: skip
    fleet = pipelined_fleet(tmp_path, repo, tasks, runner, land="squash")

    def stop_when_b_waits(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.MERGE_QUEUED and event.data.get("after") == "a":
            engine.request_stop()

    first = await harness.run(fleet, during=stop_when_b_waits, **landing(fleet, tmp_path))
    assert first.state("b") == "merge_queued" and first.state("a") == "ci_running"
    for journal in harness.journals:  # the first supervisor is gone
        journal.close()
    harness.journals.clear()
    go.write_text("")
    journal = Journal(tmp_path / "state")
    harness.journals.append(journal)
    resume = choose_run(journal.latest_run(), fleet.name, str(tmp_path / "state"))
    assert resume is not None
    engine = Engine(fleet, journal=journal, resume=resume, **landing(fleet, tmp_path))
    events: list[Event] = []
    engine.subscribe(events.append)
    result = await engine.run()
    second = Run(result=result, events=events, state_dir=tmp_path / "state", engine=engine)
    assert result.exit_code == 0, events
    assert second.state("a") == second.state("b") == "succeeded"
    assert [e.task for e in second.of(EventKind.TASK_LANDED)] == ["a", "b"]
    assert second.of(EventKind.ATTEMPT_STARTED, "b", stage="agent") == []  # b's work kept
    assert git(repo, "log", "--format=%s", "main").splitlines() == [
        "b: add b", "a: add a", "initial"
    ]  # fmt: skip
    assert git(repo, "diff", "--name-only", "main~1", "main") == "b.txt"
    assert_nothing_left(repo)


async def test_a_dependent_preempted_after_its_commit_gets_its_branch_made_afresh(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """b has committed and passed CI on a's first change, and waits for a to
    land, when a's CI fails: b's commit on fleetdeck/b is void (fleetdeck's own
    branch, made afresh on a's fix), and only b's second change lands."""
    repo = make_repo(tmp_path / "repo")
    b_tested = tmp_path / "b-tested"
    failed = tmp_path / "a-ci-failed"
    runner = (
        f'if [ "$FLEETDECK_TASK" = b ]; then touch {b_tested}; exit 0; fi; '
        f"if [ ! -e {failed} ]; then until [ -e {b_tested} ]; do sleep 0.02; done; "
        f"sleep 0.3; touch {failed}; exit 1; fi"
    )
    tasks = [
        {
            "id": "a",
            "agent": "sh",
            "prompt": 'add a\necho "a-$FLEETDECK_ATTEMPT" > a.txt',
            "ci": "t",
            "retries": 1,
        },
        {
            "id": "b",
            "agent": "sh",
            "prompt": 'add b\n{ cat a.txt; echo "b-$FLEETDECK_ATTEMPT"; } > b.txt',
            "ci": "t",
            "depends_on": ["a"],
            "keep_worktree": True,  # a stacked worktree is made afresh all the same
        },
    ]
    fleet = pipelined_fleet(tmp_path, repo, tasks, runner)
    commits: list[str] = []

    def during(engine: Engine, event: Event) -> None:
        finished = event.kind is EventKind.ATTEMPT_FINISHED and event.task == "b"
        if finished and event.data["stage"] == "agent" and "commit" in event.data:
            commits.append(event.data["commit"])

    run = await harness.run(fleet, during=during, **landing(fleet, tmp_path))
    assert run.result.exit_code == 0, run.events
    (requeued,) = run.of(EventKind.TASK_REQUEUED, "b", cause="preempted")
    assert "'a' failed in ci" in requeued.data["reason"]
    held = [e for e in run.of(EventKind.MERGE_QUEUED, "b") if "after" in e.data]
    assert run.events.index(held[0]) < run.events.index(requeued)  # it was waiting to land
    assert len(commits) == 2
    tip = git(repo, "rev-parse", "main")
    void = subprocess_ok(repo, "merge-base", "--is-ancestor", commits[0], tip)
    assert not void, "the preempted commit landed"
    assert git(repo, "show", "main:b.txt").splitlines()[0] == "a-2"
    assert git(repo, "log", "--format=%s", "main").splitlines() == [
        "b: add b", "a: add a", "initial"
    ]  # fmt: skip
    assert_nothing_left(repo)


def subprocess_ok(repo: Path, *args: str) -> bool:
    """True when `git ARGS` in `repo` exits 0 (a question, not an error)."""
    return subprocess.run(["git", "-C", str(repo), *args], check=False).returncode == 0
