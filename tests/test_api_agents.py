"""API agents against the real local server (`fleetdeck.demo.api`) on 127.0.0.1:
both formats, streaming into the log, outputs between tasks, rate limits counted
by the server, throttling, timeouts, cancel, refused requests, budgets, secrets."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from api_server import api_server
from conftest import EngineHarness, make_fleet
from fleetdeck.model import EventKind, Outcome

KEY = "sk-test-9c1f0e7d5b3a"


def api_agent(url: str, kind: str = "openai", **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "model": "local-model", "base_url": url, "slots": 4, **extra}


def attempt_files(state: Path, task: str, number: int = 1) -> tuple[str, str]:
    """The (log, output) text of a task's agent attempt."""
    run_dir = next(p for p in (state / "runs").iterdir() if p.is_dir())
    stem = run_dir / f"{task}.{number}.agent"
    out = Path(f"{stem}.out")
    return Path(f"{stem}.log").read_text(), out.read_text() if out.exists() else ""


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_an_api_task_streams_its_answer_and_feeds_a_process_task(
    harness: EngineHarness, tmp_path: Path, kind: str
) -> None:
    with api_server("--latency", "0.05", "--chunk-delay", "0.01", "--words", "12") as server:
        fleet = make_fleet(
            tmp_path,
            [
                {"id": "draft", "agent": "writer", "prompt": "Write the release notes"},
                {
                    "id": "polish",
                    "agent": "writer",
                    "prompt": "Polish this: {inputs}",
                    "depends_on": ["draft"],
                },
                # A process task reads the API tasks' outputs, as a CI check would.
                {
                    "id": "check",
                    "agent": "sh",
                    "depends_on": ["polish"],
                    "prompt": 'grep -q "^On " "$FLEETDECK_AGENT_OUTPUT" 2>/dev/null; '
                    "python3 -c \"import json,os; d=json.load(open(os.environ['FLEETDECK_INPUTS']));"
                    " assert d['polish'].startswith('On '), d\"",
                },
            ],
            agents={
                "writer": api_agent(server.base_url, kind, price={"input": 1.0, "output": 2.0}),
                "sh": {"command": ["sh", "-c", "{prompt}"]},
            },
        )
        run = await harness.run(fleet)
        stats = server.stats()
    assert run.result.exit_code == 0, run.events
    log, output = attempt_files(tmp_path / "state", "draft")
    assert output.startswith("On Write the release notes: ")
    assert len(output.split()) >= 12
    # The log holds the streamed text itself (after one line naming the request).
    assert output.strip() in log
    # The dependent's prompt carried the draft's output in place of {inputs}.
    # (the server's answer names the prompt's last line: the draft's text).
    _, polished = attempt_files(tmp_path / "state", "polish")
    assert polished.startswith("On On Write the release notes:")
    finished = run.of(EventKind.ATTEMPT_FINISHED, "draft")[0]
    usage = finished.data["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] == 12
    assert usage["cost"] == pytest.approx((usage["input_tokens"] + 2 * 12) / 1e6)
    assert stats["completed"] == 2 and stats["by_status"] == {"200": 2}
    # What the server received as the second prompt contains the first answer.
    assert stats["input_tokens"] > 2 * usage["input_tokens"]
