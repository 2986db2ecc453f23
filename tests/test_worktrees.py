"""A git worktree per task (real repositories, real processes, a real journal):
attempts run in it, what the agent left is committed, retries start afresh, and a
branch fleetdeck did not make is never touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import EngineHarness, Run
from fleetdeck.config import Fleet, build_fleet
from fleetdeck.executors import build_executors
from fleetdeck.model import TRAIN_HOST, EventKind
from fleetdeck.workspace.train import Train
from fleetdeck.workspace.worktrees import GitWorkspace, commit_subject
from git_support import git, make_repo


def land_fleet(
    tmp_path: Path,
    repo: Path,
    tasks: list[dict[str, Any]],
    *,
    runners: dict[str, Any] | None = None,
    verify_only: bool = False,
    **repo_keys: Any,
) -> Fleet:
    """A fleet changing `repo`, its agents `sh -c PROMPT`, state in tmp_path/state
    (`verify_only`: its tasks do not land, their branches stay to be looked at)."""
    if verify_only:
        tasks = [{**task, "land": False} for task in tasks]
    data = {
        "fleet": {"name": "land", "state_dir": "state", "grace_period": 0.5, "retry_backoff": 0.01},
        "repo": {"path": str(repo), **repo_keys},
        "agents": {"sh": {"command": ["sh", "-c", "{prompt}"], "slots": 4}},
        "runners": runners or {},
        "tasks": tasks,
    }
    return build_fleet(data, source="land.toml", base_dir=tmp_path)


def landing(fleet: Fleet, tmp_path: Path) -> dict[str, Any]:
    """The engine's keywords for a worktree per task and the merge train, as cli.py has them."""
    workspace = GitWorkspace(fleet, tmp_path / "state")
    executors = {**build_executors(fleet), TRAIN_HOST: Train(fleet, workspace)}
    return {"workspace": workspace, "executors": executors}


async def land(harness: EngineHarness, fleet: Fleet, tmp_path: Path) -> Run:
    """Run `fleet` with a worktree per task and its merge train, as cli.py does."""
    return await harness.run(fleet, **landing(fleet, tmp_path))


WHERE = 'pwd > "$FLEETDECK_OUTPUT"; echo "$FLEETDECK_BRANCH $FLEETDECK_BASE" >> "$FLEETDECK_OUTPUT"'


async def test_each_task_works_in_its_own_worktree_and_its_work_is_committed(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    tip = git(repo, "rev-parse", "main")
    check = (
        'test "$(git log -1 --format=%s)" = "$FLEETDECK_TASK: write" '
        '&& test -f "$FLEETDECK_TASK.txt"'
    )
    fleet = land_fleet(
        tmp_path,
        repo,
        [
            {"id": "a", "agent": "sh", "prompt": f"write\n{WHERE}; echo one > a.txt", "ci": "t"},
            {"id": "b", "agent": "sh", "prompt": f"write\n{WHERE}; printf 'x\\ny\\n' > b.txt"},
        ],
        runners={"t": {"command": ["sh", "-c", check]}},
        verify_only=True,
    )
    run = await land(harness, fleet, tmp_path)
    assert run.state("a") == "succeeded"  # its CI found a's commit in the same worktree
    assert run.state("b") == "succeeded"
    for task, lines in (("a", 1), ("b", 2)):
        attempt = run.engine.task(task).output_attempt
        assert attempt is not None
        where, said = Path(attempt.output_path).read_text().splitlines()
        assert where == str(tmp_path / "state" / "worktrees" / task)
        assert said == f"fleetdeck/{task} {tip}"
        message = git(repo, "log", "-1", "--format=%B", f"fleetdeck/{task}")
        assert message == f"{task}: write\n\nFleetdeck-Task: {task}"
        assert git(repo, "rev-parse", f"fleetdeck/{task}~1") == tip
        finished = run.of(EventKind.ATTEMPT_FINISHED, task, stage="agent")[0].data
        assert (finished["files"], finished["insertions"], finished["deletions"]) == (1, lines, 0)
        assert finished["commit"] == git(repo, "rev-parse", f"fleetdeck/{task}")
    # The user's checkout saw nothing of it.
    assert not (repo / "a.txt").exists() and git(repo, "status", "--porcelain") == ""


async def test_commits_the_agent_made_are_kept(harness: EngineHarness, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "config", "user.name", "Agent")
    prompt = (
        "two steps\necho 1 > one.txt && git add one.txt && git commit -qm 'agent: one' "
        "&& echo 2 > two.txt"
    )
    fleet = land_fleet(
        tmp_path, repo, [{"id": "a", "agent": "sh", "prompt": prompt}], verify_only=True
    )
    run = await land(harness, fleet, tmp_path)
    assert run.state("a") == "succeeded"
    subjects = git(repo, "log", "--format=%s", "main..fleetdeck/a").splitlines()
    assert subjects == ["a: two steps", "agent: one"]
    finished = run.of(EventKind.ATTEMPT_FINISHED, "a", stage="agent")[0].data
    assert finished["files"] == 2


async def test_an_agent_that_changed_nothing_fails_with_empty_fail(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    fleet = land_fleet(tmp_path, repo, [{"id": "a", "agent": "sh", "prompt": "true"}])
    run = await land(harness, fleet, tmp_path)
    finished = run.of(EventKind.ATTEMPT_FINISHED, "a")[0].data
    assert finished["outcome"] == "failed"
    assert finished["error"] == 'the agent changed nothing in its worktree ([repo] empty = "fail")'
    assert run.state("a") == "failed"


async def test_an_agent_that_changed_nothing_is_fine_with_empty_ok(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    fleet = land_fleet(tmp_path, repo, [{"id": "b", "agent": "sh", "prompt": "true"}], empty="ok")
    run = await land(harness, fleet, tmp_path)
    assert run.state("b") == "succeeded"
    finished = run.of(EventKind.ATTEMPT_FINISHED, "b")[0].data
    assert (finished["files"], finished["insertions"], finished["deletions"]) == (0, 0, 0)


async def test_a_branch_fleetdeck_did_not_make_is_refused_and_left_alone(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "branch", "fleetdeck/a")
    theirs = git(repo, "rev-parse", "fleetdeck/a")
    fleet = land_fleet(tmp_path, repo, [{"id": "a", "agent": "sh", "prompt": "echo x > x"}])
    run = await land(harness, fleet, tmp_path)
    finished = run.of(EventKind.ATTEMPT_FINISHED, "a")[0].data
    assert finished["outcome"] == "failed"
    assert finished["error"] == (
        f"branch 'fleetdeck/a' exists in {repo} and fleetdeck did not make it: "
        "rename or delete it, fleetdeck will not reuse it"
    )
    assert git(repo, "rev-parse", "fleetdeck/a") == theirs
    assert len(git(repo, "worktree", "list").splitlines()) == 1


# The first attempt leaves a file and fails; the second says whether it found it.
FLAKY = (
    'if [ "$FLEETDECK_ATTEMPT" = 1 ]; then echo junk > junk.txt; exit 1; fi; '
    'if [ -e junk.txt ]; then echo found > "$FLEETDECK_OUTPUT"; fi; echo ok > ok.txt'
)


async def test_each_retry_starts_from_a_fresh_worktree_unless_kept(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    tasks = [
        {"id": "fresh", "agent": "sh", "prompt": FLAKY, "retries": 1},
        {"id": "kept", "agent": "sh", "prompt": FLAKY, "retries": 1, "keep_worktree": True},
    ]
    fleet = land_fleet(tmp_path, repo, tasks, verify_only=True)
    run = await land(harness, fleet, tmp_path)
    outputs = {}
    for task in ("fresh", "kept"):
        assert run.state(task) == "succeeded"
        attempt = run.engine.task(task).output_attempt
        assert attempt is not None and attempt.number == 2
        out = Path(attempt.output_path)
        outputs[task] = out.read_text().strip() if out.exists() else ""
    assert outputs == {"fresh": "", "kept": "found"}
    assert git(repo, "ls-tree", "--name-only", "fleetdeck/fresh").split() == ["README", "ok.txt"]


def test_the_commit_subject_is_the_prompts_first_line_without_a_heading_mark() -> None:
    assert commit_subject("Add the /login endpoint\nwith tests") == "Add the /login endpoint"
    assert commit_subject("\n# Bump the version to 1.1\necho 1.1 > VERSION") == (
        "Bump the version to 1.1"
    )
    assert commit_subject("  \n") == "changes"
