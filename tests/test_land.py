"""The merge train on real repositories: tasks land on the target in order,
tested on top of what landed before them, conflicts go back to their agent, and
the user's checkout of the target is brought along without losing their work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import EngineHarness, Run
from fleetdeck.model import EventKind
from git_support import git, make_repo
from test_worktrees import land, land_fleet


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


async def test_a_dirty_checked_out_target_is_never_touched(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", {"README": "hello\n", "notes": "mine\n"})
    before = git(repo, "rev-parse", "main")
    (repo / "README").write_bytes(b"my own edit\r\n")
    fleet = land_fleet(
        tmp_path, repo, [{"id": "a", "agent": "sh", "prompt": "echo theirs > README"}]
    )
    run = await land(harness, fleet, tmp_path)
    assert run.state("a") == "failed"
    finished = run.of(EventKind.ATTEMPT_FINISHED, "a", stage="merge")[0].data
    assert finished["outcome"] == "failed"
    assert finished["error"] == (
        f"not landed: target checked out in {repo} with local changes to README: "
        "commit or stash them there"
    )
    assert (repo / "README").read_bytes() == b"my own edit\r\n"
    assert git(repo, "rev-parse", "main") == before
    # A failed task's worktree and branch stay, for inspection.
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/fleetdeck/") == (
        "refs/heads/fleetdeck/a"
    )
    assert (tmp_path / "state" / "worktrees" / "a" / "README").read_text() == "theirs\n"


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
