"""The merge train on real repositories: tasks land on the target in order,
tested on top of what landed before them, conflicts go back to their agent, and
the user's checkout of the target is brought along without losing their work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import EngineHarness, Run
from fleetdeck.engine import Engine
from fleetdeck.fold import next_state
from fleetdeck.model import Event, EventKind, TaskState
from git_support import git, make_repo
from test_worktrees import land, land_fleet, landing


def assert_nothing_left(repo: Path) -> None:
    assert len(git(repo, "worktree", "list", "--porcelain").split("\n\n")) == 1
    assert git(repo, "branch", "--list", "fleetdeck/*") == ""


def outcomes(run: Run, task: str, stage: str) -> list[str]:
    return [e.data["outcome"] for e in run.of(EventKind.ATTEMPT_FINISHED, task, stage=stage)]


async def test_independent_tasks_land_and_nothing_is_left_behind(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    fleet = land_fleet(
        tmp_path,
        repo,
        [
            {"id": "a", "agent": "sh", "prompt": "add a\necho a > a.txt", "ci": "t"},
            {"id": "b", "agent": "sh", "prompt": "add b\necho b > b.txt", "ci": "t"},
            {"id": "c", "agent": "sh", "prompt": "add c\necho c > c.txt"},
        ],
        runners={"t": {"command": ["sh", "-c", 'test -f "$FLEETDECK_TASK.txt"'], "slots": 2}},
    )
    run = await land(harness, fleet, tmp_path)
    assert [run.state(task) for task in "abc"] == ["succeeded"] * 3
    assert sorted(git(repo, "ls-tree", "--name-only", "main").split()) == [
        "README",
        "a.txt",
        "b.txt",
        "c.txt",
    ]
    landed = [e.data["commit"] for e in run.of(EventKind.TASK_LANDED)]
    assert landed[-1] == git(repo, "rev-parse", "main") and len(landed) == 3
    for task in "abc":
        assert run.index(EventKind.TASK_LANDED, task) < run.index(EventKind.TASK_SUCCEEDED, task)
        assert run.of(EventKind.MERGE_QUEUED, task)
    # The user's checkout of main came along, clean.
    assert (repo / "c.txt").read_text() == "c\n"
    assert git(repo, "status", "--porcelain") == ""
    assert_nothing_left(repo)


async def test_a_dependent_sees_its_dependencys_change(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    tasks: list[dict[str, Any]] = [
        {"id": "a", "agent": "sh", "prompt": "echo a > a.txt"},
        {"id": "b", "agent": "sh", "prompt": "cat a.txt > b.txt", "depends_on": ["a"]},
    ]
    run = await land(harness, land_fleet(tmp_path, repo, tasks), tmp_path)
    assert run.state("b") == "succeeded"
    assert git(repo, "show", "main:b.txt") == "a"
    assert git(repo, "log", "--format=%s", "main").splitlines() == [
        "b: cat a.txt > b.txt",
        "a: echo a > a.txt",
        "initial",
    ]


# Each task writes the same new file; told of a conflict, it adds its line instead.
CONFLICTING = (
    'if [ -n "$FLEETDECK_CONFLICT" ]; then printf %s "$FLEETDECK_CONFLICT" > "$FLEETDECK_OUTPUT";'
    ' echo "$FLEETDECK_TASK" >> shared.txt; else echo "$FLEETDECK_TASK" > shared.txt; fi'
)


async def test_a_conflict_goes_back_to_the_agent_and_then_lands(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    tasks = [{"id": t, "agent": "sh", "prompt": CONFLICTING, "retries": 1} for t in ("a", "b")]
    run = await land(harness, land_fleet(tmp_path, repo, tasks), tmp_path)
    assert run.state("a") == run.state("b") == "succeeded"
    merges = {task: outcomes(run, task, "merge") for task in ("a", "b")}
    first, second = ("a", "b") if merges["a"] == ["ok"] else ("b", "a")
    assert merges == {first: ["ok"], second: ["conflict", "ok"]}
    retried = run.engine.task(second).output_attempt
    assert retried is not None and retried.number == 2
    assert Path(retried.output_path).read_text() == "shared.txt"
    assert git(repo, "show", "main:shared.txt").splitlines() == [first, second]
    assert_nothing_left(repo)


async def test_a_moved_target_reruns_ci_and_nothing_lands_untested(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    tested = tmp_path / "tested"
    ci = 'git rev-parse "HEAD^{{tree}}" >> ' + str(tested)  # {{ }}: not a placeholder
    fleet = land_fleet(
        tmp_path,
        repo,
        [
            {"id": "a", "agent": "sh", "prompt": "echo a > a.txt", "ci": "t"},
            {"id": "b", "agent": "sh", "prompt": "echo b > b.txt", "ci": "t"},
        ],
        runners={"t": {"command": ["sh", "-c", ci], "slots": 2}},
    )
    run = await land(harness, fleet, tmp_path)
    # Every commit that landed on main has a tree its CI ran on.
    trees = set(tested.read_text().split())
    for commit in git(repo, "rev-list", "--first-parent", "main~2..main").split():
        assert git(repo, "rev-parse", f"{commit}^{{tree}}") in trees
    assert run.state("a") == run.state("b") == "succeeded"
    merges = {task: outcomes(run, task, "merge") for task in ("a", "b")}
    # Both started from the same tip: whichever lands second was tested again on top.
    assert sorted(merges.values()) == [["ok"], ["retest", "ok"]]
    second = "a" if merges["a"] == ["retest", "ok"] else "b"
    assert outcomes(run, second, "ci") == ["ok", "ok"]
    assert_nothing_left(repo)


async def test_a_dirty_checked_out_target_waits_and_lands_once_the_user_cleans_it(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", {"README": "hello\n", "notes": "mine\n"})
    before = git(repo, "rev-parse", "main")
    (repo / "README").write_bytes(b"my own edit\r\n")
    (repo / "notes").write_bytes(b"still mine\n")
    (repo / "scratch.txt").write_bytes(b"untracked\n")
    mine = {name: (repo / name).read_bytes() for name in ("notes", "scratch.txt")}
    # No retry to spend: waiting must not cost one.
    task = {"id": "a", "agent": "sh", "prompt": "echo theirs > README", "retries": 0}
    fleet = land_fleet(tmp_path, repo, [task])
    waits: list[Any] = []

    def during(engine: Engine, event: Event) -> None:
        if event.kind is not EventKind.MERGE_QUEUED or "reason" not in event.data:
            return
        waits.append(event)
        assert engine.task("a").state is TaskState.MERGE_QUEUED
        assert [(item.task, item.state, item.reason) for item in engine.snapshot().attention] == [
            ("a", TaskState.MERGE_QUEUED, "target checked out with local changes to README")
        ]
        # Nothing moved, nothing of the user's touched.
        assert (repo / "README").read_bytes() == b"my own edit\r\n"
        assert git(repo, "rev-parse", "main") == before
        assert {name: (repo / name).read_bytes() for name in mine} == mine
        if len(waits) == 2:  # it waits, and waits again, until the user does something
            git(repo, "checkout", "--", "README")

    run = await harness.run(fleet, during=during, **landing(fleet, tmp_path))
    assert run.state("a") == "succeeded"
    assert len(waits) == 2
    assert waits[0].data["reason"] == "target checked out with local changes to README"
    assert outcomes(run, "a", "merge") == ["wait", "wait", "ok"]
    assert outcomes(run, "a", "agent") == ["ok"]  # the agent ran once
    assert (repo / "README").read_text() == "theirs\n"
    assert git(repo, "show", "main:README") == "theirs"
    assert {name: (repo / name).read_bytes() for name in mine} == mine
    assert git(repo, "status", "--porcelain") == "M notes\n?? scratch.txt"  # (stripped)
    assert run.engine.snapshot().attention == ()
    # The journal says it: folding the events gives merge_queued while it waited.
    states = [next_state(TaskState.RUNNING, e) for e in run.of(EventKind.MERGE_QUEUED, "a")]
    assert set(states) == {TaskState.MERGE_QUEUED}
    assert_nothing_left(repo)


async def test_the_users_other_changes_stay_as_the_target_comes_along(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", {"README": "hello\n", "notes": "mine\n"})
    (repo / "notes").write_bytes(b"still mine\n")
    (repo / "scratch.txt").write_bytes(b"untracked\n")
    fleet = land_fleet(tmp_path, repo, [{"id": "a", "agent": "sh", "prompt": "echo a > a.txt"}])
    run = await land(harness, fleet, tmp_path)
    assert run.state("a") == "succeeded"
    assert (repo / "a.txt").read_text() == "a\n"
    assert (repo / "notes").read_bytes() == b"still mine\n"
    assert (repo / "scratch.txt").read_bytes() == b"untracked\n"
    assert git(repo, "diff", "--name-only") == "notes"  # unstaged, as it was
    assert git(repo, "diff", "--cached", "--name-only") == ""
    assert git(repo, "ls-files", "--others") == "scratch.txt"
    assert_nothing_left(repo)
