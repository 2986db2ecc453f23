"""The example fleets in config/: every one validates, and content.toml runs end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fleetdeck.cli import main
from git_support import make_repo

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
CONFIGS = sorted(CONFIG_DIR.glob("*.toml"))

GENERATIONS = ("twitter-thread", "linkedin-post", "instagram-caption", "newsletter")


def test_the_examples_are_there() -> None:
    names = {path.name for path in CONFIGS}
    expected = {
        "demo.toml",
        "code-review.toml",
        "sequential-prs.toml",
        "content.toml",
        "agents.example.toml",
        "land.toml",
        "email-triage.toml",
        "seed-operum.toml",
        "seed-gem-team.toml",
        "seed-orchastra.toml",
        "seed-orchastra-100.toml",
    }
    assert expected <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_example_config_validates(
    path: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if path.name == "land.toml":
        path = _land_demo(tmp_path)
    elif path.name == "agents.example.toml":
        path = _in_a_repository(tmp_path, path)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert ": ok: fleet " in out
    if path.name == "agents.example.toml":
        # Real agents' commands: a warning for each one this machine does not have.
        for line in err.splitlines():
            assert "warning: " in line and "is not on PATH on this machine" in line, line
    else:
        assert err == ""


# A file name in a comment: a path ending in an extension of files people open.
FILE_NAME = re.compile(r"[A-Za-z0-9_./-]+\.(?:txt|md|toml|py|sh|json)\b")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_comments_cite_only_files_in_the_repository(path: Path) -> None:
    """A reader follows a file a comment names: it must be there (or be the copy the
    comment's own `cp` makes)."""
    comments = [line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line]
    made = {line.split()[-1] for line in comments if line.split()[:1] == ["cp"]}
    root = CONFIG_DIR.parent
    cited = {name for line in comments for name in FILE_NAME.findall(line)}
    missing = sorted(name for name in cited - made if not (root / name).exists())
    assert missing == [], f"{path.name} cites files not in the repository: {missing}"


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _when(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["ts"])


def _one(events: list[dict[str, Any]], kind: str, task: str, **match: Any) -> dict[str, Any]:
    found = [
        event
        for event in events
        if event["event"] == kind
        and event.get("task") == task
        and all(event.get(key) == value for key, value in match.items())
    ]
    assert len(found) == 1, f"expected one {kind} for {task} {match}, got {found}"
    return found[0]


@pytest.mark.slow
def test_content_fleet_runs_generations_at_once_and_feeds_publish(tmp_path: Path) -> None:
    config = CONFIG_DIR / "content.toml"
    command = [sys.executable, "-m", "fleetdeck", "run", str(config), "--no-tui", "--json"]
    command += ["--state-dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    events = _events(done.stdout)
    assert events[-1]["event"] == "run_finished"
    assert events[-1]["exit_code"] == 0

    # The four generations overlapped: each started before any of them finished.
    starts = {
        task: _when(_one(events, "attempt_started", task, stage="agent")) for task in GENERATIONS
    }
    finishes = {
        task: _when(_one(events, "attempt_finished", task, stage="agent", outcome="ok"))
        for task in GENERATIONS
    }
    assert max(starts.values()) < min(finishes.values()), (starts, finishes)

    # They started only after the research they depend on succeeded.
    researched = _one(events, "task_succeeded", "topic-research")
    assert all(start >= _when(researched) for start in starts.values())

    # publish started after all four succeeded, in time and in the event stream.
    succeeded = [_one(events, "task_succeeded", task) for task in GENERATIONS]
    publish_started = _one(events, "attempt_started", "publish", stage="agent")
    assert _when(publish_started) >= max(_when(event) for event in succeeded)
    assert events.index(publish_started) > max(events.index(event) for event in succeeded)
    _one(events, "task_succeeded", "publish")

    # ... and received their outputs: the simulated agent prints its inputs.
    logs = list(tmp_path.glob("runs/*/publish.1.agent.log"))
    assert len(logs) == 1, logs
    log = logs[0].read_text(encoding="utf-8")
    for task in GENERATIONS:
        assert f"input from {task}: {task}: done in attempt 1" in log, log


def _in_a_repository(tmp_path: Path, example: Path, *, git: bool = True) -> Path:
    """`example` copied into config/ of a new repository with a `main` branch (as a
    user copies it into theirs; `git` False: a directory that is no repository)."""
    config = tmp_path / "project" / "config" / example.name
    config.parent.mkdir(parents=True)
    config.write_text(example.read_text())
    if git:
        make_repo(tmp_path / "project", {"README": "a project\n"})
    return config


def test_the_real_agents_fleet_gives_each_task_a_worktree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleetdeck.config import load_fleet

    config = _in_a_repository(tmp_path, CONFIG_DIR / "agents.example.toml")
    fleet = load_fleet(config)
    assert fleet.config.repo is not None and fleet.config.repo.target == "main"
    assert fleet.repo_path == tmp_path / "project"
    # Outside a git repository, validate says what it needs, in one line.
    elsewhere = _in_a_repository(tmp_path / "plain", CONFIG_DIR / "agents.example.toml", git=False)
    assert main(["validate", str(elsewhere)]) == 2
    problems = [line for line in capsys.readouterr().err.splitlines() if "warning" not in line]
    assert problems == [
        f"{elsewhere}: repo.path: {tmp_path / 'plain' / 'project'} "
        "is not a git repository with a work tree"
    ]


def _land_demo(tmp_path: Path) -> Path:
    """land.toml copied under `tmp_path`, with the throwaway repository it names
    made there by its script (as `make demo-land` does in the checkout)."""
    config = tmp_path / "config" / "land.toml"
    config.parent.mkdir()
    config.write_text((CONFIG_DIR / "land.toml").read_text())
    repo = tmp_path / ".fleetdeck" / "land-demo" / "repo"
    subprocess.run(["sh", str(CONFIG_DIR / "land-demo.sh"), str(repo)], check=True)
    return config


def test_the_landing_demo_lands_every_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _land_demo(tmp_path)
    repo = tmp_path / ".fleetdeck" / "land-demo" / "repo"
    assert main(["run", "--json", "--fresh", str(config)]) == 0
    events = _events(capsys.readouterr().out)
    landed = [event["task"] for event in events if event["event"] == "task_landed"]
    assert sorted(landed) == ["bump-minor", "bump-patch", "docs", "farewell", "greeting"]
    assert landed.index("greeting") < landed.index("docs")
    merges = [
        event["outcome"]
        for event in events
        if event["event"] == "attempt_finished" and event["stage"] == "merge"
    ]
    assert "conflict" in merges

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout

    assert sorted(git("show", "main:VERSION").split("\n")[:2]) == ["1.0.1 (patch)", "1.1 (minor)"]
    assert "It says: hello, world" in git("show", "main:README.md")
    assert len(git("worktree", "list").splitlines()) == 1
    assert git("branch", "--list", "fleetdeck/*") == ""


@pytest.mark.slow
def test_the_email_triage_fleet_runs_against_the_local_api_server(tmp_path: Path) -> None:
    from api_server import api_server

    with api_server("--rpm", "200", "--latency", "0.05", "--chunk-delay", "0.005") as server:
        # The example names the server's usual port; this one runs on a free one.
        text = (CONFIG_DIR / "email-triage.toml").read_text()
        config = tmp_path / "email-triage.toml"
        config.write_text(text.replace("http://127.0.0.1:8765/v1", server.base_url))
        command = [sys.executable, "-m", "fleetdeck", "run", str(config), "--no-tui", "--json"]
        command += ["--state-dir", str(tmp_path / "state")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
        stats = server.stats()
    assert done.returncode == 0, done.stdout + done.stderr
    events = _events(done.stdout)
    # Within the provider's limit: the server refused nothing.
    assert stats["over_limit"] == 0 and stats["completed"] == 15, stats
    classified = [e for e in events if e["event"] == "task_succeeded" and "classify" in e["task"]]
    assert len(classified) == 10
    # The digest was checked by its CI runner, and its cost is in its attempt_finished.
    _one(events, "attempt_finished", "digest", stage="ci", outcome="ok")
    digest = _one(events, "attempt_finished", "digest", stage="agent", outcome="ok")
    assert digest["usage"]["cost"] > 0
    # Its prompt held every note and draft: the server counted far more input than
    # any single email.
    assert digest["usage"]["input_tokens"] > 10 * 30
