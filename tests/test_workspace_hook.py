"""The workspace hook: each task's attempts run in the place its workspace made,
with what it adds to their environment, and the place is released when the task
ends (real processes, a real journal)."""

from __future__ import annotations

from pathlib import Path

from conftest import EngineHarness, make_fleet
from fleetdeck.engine.workspace import Place
from fleetdeck.model import Attempt, EventKind, TaskState


class DirPerTask:
    """A directory per task under `root`, as a git worktree would be."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prepared: list[tuple[str, int, str]] = []
        self.released: dict[str, TaskState] = {}

    async def prepare(self, task: str, attempt: Attempt) -> Place:
        where = self.root / task
        where.mkdir(parents=True, exist_ok=True)
        self.prepared.append((task, attempt.number, str(attempt.stage)))
        return Place(cwd=str(where), env={"WORKSPACE_OF": task})

    async def release(self, task: str, state: TaskState) -> None:
        self.released[task] = state


class Broken(DirPerTask):
    async def prepare(self, task: str, attempt: Attempt) -> Place:
        raise RuntimeError(f"no room for {task}")


async def test_attempts_run_in_their_tasks_workspace_and_it_is_released_at_the_end(
    harness: EngineHarness, tmp_path: Path
) -> None:
    report = 'pwd > "$FLEETDECK_OUTPUT"; echo "$WORKSPACE_OF" >> "$FLEETDECK_OUTPUT"'
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "a", "agent": "sh", "prompt": report, "ci": "check"},
            {"id": "b", "agent": "sh", "prompt": "exit 3", "depends_on": ["a"]},
            {"id": "c", "agent": "sh", "prompt": report},
        ],
        runners={
            "check": {
                "command": ["sh", "-c", 'test "$(pwd)" = "$EXPECT/a"'],
                "slots": 1,
                "env": {"EXPECT": str(tmp_path / "places")},
            }
        },
    )
    workspace = DirPerTask(tmp_path / "places")
    run = await harness.run(fleet, workspace=workspace)
    # The agent stage of a and c wrote where they ran and what their workspace added.
    for task in ("a", "c"):
        attempt = run.engine.task(task).output_attempt
        assert attempt is not None
        lines = Path(attempt.output_path).read_text().split()
        assert lines == [str(tmp_path / "places" / task), task]
    assert run.state("a") == "succeeded"  # its CI ran in a's place too (it checks pwd)
    assert ("a", 1, "ci") in workspace.prepared
    assert workspace.released == {
        "a": TaskState.SUCCEEDED,
        "b": TaskState.FAILED,
        "c": TaskState.SUCCEEDED,
    }


async def test_a_workspace_that_cannot_be_made_fails_the_attempt_with_its_reason(
    harness: EngineHarness, tmp_path: Path
) -> None:
    fleet = make_fleet(tmp_path, [{"id": "a", "agent": "sh", "prompt": "true"}])
    run = await harness.run(fleet, workspace=Broken(tmp_path))
    finished = run.of(EventKind.ATTEMPT_FINISHED, "a")
    assert finished[0].data["outcome"] == "failed"
    assert "no room for a" in finished[0].data["error"]
    assert run.state("a") == "failed"
