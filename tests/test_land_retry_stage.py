"""Rerunning CI alone on a real repository: the task's CI runs again in its
worktree, on the commit its agent left (no new agent attempt), and then lands."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import EngineHarness
from fleetdeck.engine import Engine
from fleetdeck.executors import build_executors
from fleetdeck.model import TRAIN_HOST, Event, EventKind, TaskState
from fleetdeck.workspace.train import Train
from fleetdeck.workspace.worktrees import GitWorkspace
from git_support import git, make_repo
from test_land import assert_nothing_left
from test_worktrees import land_fleet


async def test_a_ci_only_retry_reruns_ci_on_the_agents_commit_and_lands(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    agent_runs, tested, flaked = tmp_path / "agent-runs", tmp_path / "tested", tmp_path / "flaked"
    # A flaky test: it fails the first time only. Each CI run says which commit it saw.
    ci = (
        f"git rev-parse HEAD >> {tested}; "
        f"if [ -e {flaked} ]; then exit 0; fi; touch {flaked}; exit 1"
    )
    fleet = land_fleet(
        tmp_path,
        repo,
        [
            {
                "id": "a",
                "agent": "sh",
                "ci": "t",
                "retries": 0,
                "prompt": f"echo run >> {agent_runs}; echo a > a.txt",
            },
            # Keeps the run going until the retry is in.
            {"id": "slow", "agent": "sh", "prompt": "sleep 1.5; echo s > s.txt"},
        ],
        runners={"t": {"command": ["sh", "-c", ci], "slots": 1}},
    )

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.TASK_FAILED and event.task == "a":
            assert engine.retry_stages("a") == ("agent", "ci")
            asyncio.get_running_loop().call_soon(engine.retry, "a", "ci")

    # As cli.py builds it (see test_worktrees.land), with the retry in the middle.
    workspace = GitWorkspace(fleet, tmp_path / "state")
    executors = {**build_executors(fleet), TRAIN_HOST: Train(fleet, workspace)}
    run = await harness.run(fleet, workspace=workspace, executors=executors, during=during)
    assert run.engine.task("a").state is TaskState.SUCCEEDED
    assert agent_runs.read_text().splitlines() == ["run"]  # the agent ran once
    commits = tested.read_text().split()
    assert len(commits) == 2 and commits[0] == commits[1]  # CI twice, on one commit
    requeued = run.of(EventKind.TASK_REQUEUED, "a")
    assert [e.data.get("stage") for e in requeued] == ["ci"]
    assert git(repo, "show", "main:a.txt") == "a"
    assert_nothing_left(repo)
