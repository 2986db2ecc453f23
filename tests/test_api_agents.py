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
                    # A CI runner checks what the model wrote.
                    "ci": "verify",
                },
                # A process task reads the API task's output from its inputs.
                {
                    "id": "check",
                    "agent": "sh",
                    "depends_on": ["polish"],
                    "prompt": 'grep -q \'"polish": "On \' "$FLEETDECK_INPUTS"',
                },
            ],
            agents={
                "writer": api_agent(server.base_url, kind, price={"input": 1.0, "output": 2.0}),
                "sh": {"command": ["sh", "-c", "{prompt}"]},
            },
            runners={
                "verify": {"command": ["sh", "-c", 'grep -q "^On On " "$FLEETDECK_AGENT_OUTPUT"']}
            },
        )
        run = await harness.run(fleet)
        stats = server.stats()
    assert run.result.exit_code == 0, run.events
    assert run.of(EventKind.ATTEMPT_FINISHED, "polish", stage="ci", outcome=Outcome.OK)
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
    # The report adds it up per agent and for the run, as the server counted it.
    report = run.result.report
    total = report.usage_total
    assert total is not None and total.requests == 2
    assert (total.input_tokens, total.output_tokens) == (stats["input_tokens"], 24)
    assert report.usage["writer"].cost == pytest.approx((stats["input_tokens"] + 48) / 1e6)
    # What the server received as the second prompt contains the first answer.
    assert stats["input_tokens"] > 2 * usage["input_tokens"]


def simple_tasks(count: int, agent: str = "writer", **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"t{i}", "agent": agent, "prompt": f"item {i}", **extra} for i in range(count)]


async def test_the_rate_limit_is_never_exceeded_as_the_server_counts(
    harness: EngineHarness, tmp_path: Path
) -> None:
    # 10 requests a second (a burst of 10) on the server; the agent knows its limit.
    with api_server("--latency", "0.01", "--chunk-delay", "0", "--rpm", "600") as server:
        fleet = make_fleet(
            tmp_path,
            simple_tasks(40),
            agents={"writer": api_agent(server.base_url, slots=16, requests_per_minute=600)},
        )
        run = await harness.run(fleet)
        stats = server.stats()
    assert run.result.exit_code == 0
    assert stats["requests"] == 40 and stats["over_limit"] == 0, stats
    assert not run.of(EventKind.ATTEMPT_FINISHED, outcome=Outcome.THROTTLED)


async def test_a_429_pauses_the_agent_until_retry_after_and_spends_no_retry(
    harness: EngineHarness, tmp_path: Path
) -> None:
    # The agent does not know the server's limit: it runs into 429s.
    with api_server("--latency", "0.01", "--chunk-delay", "0", "--rpm", "120") as server:
        fleet = make_fleet(
            tmp_path,
            simple_tasks(5, retries=0),
            agents={"writer": api_agent(server.base_url, slots=5)},
        )
        run = await harness.run(fleet)
        stats = server.stats()
    # Every task succeeded though none had a retry to spend.
    assert run.result.exit_code == 0, [e.to_json_dict() for e in run.events]
    throttled = run.of(EventKind.ATTEMPT_FINISHED, outcome=Outcome.THROTTLED)
    assert throttled and stats["over_limit"] == len(throttled)
    assert all(e.data["retry_after"] >= 1 for e in throttled)
    assert not run.of(EventKind.RETRY_SCHEDULED)
    # Honoured: after a 429, nothing is sent on the agent before the server's time.
    first = throttled[0]
    later_starts = [e.ts for e in run.of(EventKind.ATTEMPT_STARTED) if e.ts > first.ts]
    assert later_starts and min(later_starts) >= first.ts + first.data["retry_after"] - 0.05
    ready = run.of(EventKind.TASK_READY, first.task)
    assert any("throttled: agent writer resumes at" in e.data.get("reason", "") for e in ready)


async def test_a_timeout_closes_the_request(harness: EngineHarness, tmp_path: Path) -> None:
    with api_server("--latency", "0", "--chunk-delay", "0.2", "--words", "50") as server:
        fleet = make_fleet(
            tmp_path,
            [{"id": "slow", "agent": "writer", "prompt": "long", "timeout": 0.6}],
            agents={"writer": api_agent(server.base_url)},
        )
        run = await harness.run(fleet)
        finished = run.of(EventKind.ATTEMPT_FINISHED, "slow")[0]
        assert finished.data["outcome"] == Outcome.TIMEOUT
        log, _ = attempt_files(tmp_path / "state", "slow")
        assert log.count(" ") >= 2  # some of the answer had streamed in
        assert await _server_sees(server, "closed_early", 1)


async def test_cancel_closes_the_request(harness: EngineHarness, tmp_path: Path) -> None:
    with api_server("--latency", "0", "--chunk-delay", "0.2", "--words", "50") as server:
        fleet = make_fleet(
            tmp_path,
            [{"id": "slow", "agent": "writer", "prompt": "long"}],
            agents={"writer": api_agent(server.base_url)},
        )

        def cancel_once_started(engine: Any, event: Any) -> None:
            if event.kind is EventKind.ATTEMPT_STARTED:
                asyncio.get_running_loop().call_later(0.5, engine.cancel, "slow")

        run = await harness.run(fleet, during=cancel_once_started)
        assert run.state("slow") == "cancelled"
        assert await _server_sees(server, "closed_early", 1)
        assert server.stats()["completed"] == 0


async def _server_sees(server: Any, key: str, value: int) -> bool:
    for _ in range(100):
        if server.stats()[key] == value:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_client_error_fails_at_once_with_the_servers_message(
    harness: EngineHarness, tmp_path: Path
) -> None:
    with api_server("--latency", "0") as server:
        fleet = make_fleet(
            tmp_path,
            [{"id": "bad", "agent": "writer", "prompt": "x", "retries": 3}],
            agents={"writer": api_agent(server.base_url, model="error-404")},
        )
        run = await harness.run(fleet)
    assert run.state("bad") == "failed"
    finished = run.of(EventKind.ATTEMPT_FINISHED, "bad")
    assert len(finished) == 1
    assert finished[0].data["error"] == "HTTP 404: model error-404 answers 404"


async def test_a_refused_key_holds_the_agent_until_the_operator_resumes(
    harness: EngineHarness, tmp_path: Path
) -> None:
    with api_server("--latency", "0") as server:
        fleet = make_fleet(
            tmp_path,
            simple_tasks(2),
            agents={"writer": api_agent(server.base_url, model="error-401", slots=1)},
        )
        failed_at: list[float] = []

        def resume_later(engine: Any, event: Any) -> None:
            if event.kind is EventKind.TASK_FAILED:
                failed_at.append(event.ts)
                if len(failed_at) == 1:
                    asyncio.get_running_loop().call_later(0.5, engine.resume)

        run = await harness.run(fleet, during=resume_later)
        stats = server.stats()
    # Not every task failed at once: the second waited for the operator.
    assert stats["requests"] == 2
    second = run.of(EventKind.ATTEMPT_STARTED, "t1")[0]
    assert second.ts >= failed_at[0] + 0.4


async def test_a_spent_budget_stops_new_launches(harness: EngineHarness, tmp_path: Path) -> None:
    with api_server("--latency", "0.02", "--chunk-delay", "0", "--words", "10") as server:
        fleet = make_fleet(
            tmp_path,
            simple_tasks(8),
            # 10 output tokens at $1000 per million: 1 cent and a bit each.
            agents={
                "writer": api_agent(
                    server.base_url, slots=1, price={"input": 0, "output": 1000.0}, budget=0.025
                )
            },
        )
        run = await harness.run(fleet)
        stats = server.stats()
    assert stats["completed"] == 3  # the third launched before the budget was spent
    paused = run.of(EventKind.PAUSED)
    assert paused and "budget of agent writer spent" in paused[0].data["reason"]
    failed = run.of(EventKind.TASK_FAILED)
    assert len(failed) == 5 and all("budget" in e.data["reason"] for e in failed)


async def test_the_key_never_shows(
    harness: EngineHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_API_KEY", KEY)
    with api_server("--latency", "0", "--chunk-delay", "0.001") as server:
        fleet = make_fleet(
            tmp_path,
            # The answer repeats the prompt's words: the key comes back in the stream.
            [
                {"id": "leak", "agent": "writer", "prompt": f"say {KEY} twice"},
                {"id": "bad", "agent": "bad", "prompt": f"and {KEY}"},
            ],
            agents={
                "writer": api_agent(server.base_url, api_key_env="LOCAL_API_KEY"),
                "bad": api_agent(server.base_url, api_key_env="LOCAL_API_KEY", model="error-500"),
            },
        )
        run = await harness.run(fleet)
        stats = server.stats()
    assert stats["keys_seen"] == 1 and stats["requests"] == 2
    state = tmp_path / "state"
    log, output = attempt_files(state, "leak")
    assert KEY in output  # the task's own data, for its dependents
    assert KEY not in log and "***" in log
    texts = [json.dumps(e.to_json_dict()) for e in run.events]
    assert all(KEY not in text for text in texts)
    db = sqlite3.connect(state / "journal.sqlite3")
    try:
        rows = [
            str(row)
            for table in ("events", "attempts", "runs")
            for row in db.execute(f"SELECT * FROM {table}")
        ]
    finally:
        db.close()
    assert rows and all(KEY not in row for row in rows)


async def test_the_tokens_limit_is_never_exceeded_as_the_server_counts(
    harness: EngineHarness, tmp_path: Path
) -> None:
    # 100 tokens a second, a burst of one second's worth; each request is charged
    # its prompt and its max_tokens (40) on arrival.
    args = ("--latency", "0.01", "--chunk-delay", "0", "--tpm", "6000", "--tpm-burst", "100")
    with api_server(*args) as server:
        fleet = make_fleet(
            tmp_path,
            simple_tasks(8),
            agents={
                "writer": api_agent(server.base_url, slots=8, max_tokens=40, tokens_per_minute=6000)
            },
        )
        run = await harness.run(fleet)
        stats = server.stats()
    assert run.result.exit_code == 0
    assert stats["requests"] == 8 and stats["over_limit"] == 0, stats


async def test_a_request_over_the_tokens_limit_fails_at_once(
    harness: EngineHarness, tmp_path: Path
) -> None:
    with api_server("--latency", "0") as server:
        fleet = make_fleet(
            tmp_path,
            [{"id": "big", "agent": "writer", "prompt": "x" * 3000, "retries": 2}],
            agents={"writer": api_agent(server.base_url, max_tokens=100, tokens_per_minute=1000)},
        )
        run = await harness.run(fleet)
        stats = server.stats()
    assert stats["requests"] == 0 and run.state("big") == "failed"
    (finished,) = run.of(EventKind.ATTEMPT_FINISHED, "big")
    assert finished.data["error"] == (
        "the request needs about 1104 tokens, over the agent's tokens_per_minute (1000)"
    )


async def test_a_server_error_is_a_failure_with_backoff(
    harness: EngineHarness, tmp_path: Path
) -> None:
    with api_server("--latency", "0") as server:
        fleet = make_fleet(
            tmp_path,
            [{"id": "flaky", "agent": "writer", "prompt": "x", "retries": 1}],
            agents={"writer": api_agent(server.base_url, model="error-502")},
        )
        run = await harness.run(fleet)
        stats = server.stats()
    # The task's own retries, with a backoff, then it fails: not a throttle.
    assert stats["by_status"] == {"502": 2}
    assert len(run.of(EventKind.RETRY_SCHEDULED, "flaky")) == 1
    outcomes = [e.data["outcome"] for e in run.of(EventKind.ATTEMPT_FINISHED, "flaky")]
    assert outcomes == [Outcome.FAILED, Outcome.FAILED] and run.state("flaky") == "failed"


async def test_a_connection_refused_is_a_failure_with_backoff(
    harness: EngineHarness, tmp_path: Path
) -> None:
    with api_server() as server:
        url = server.base_url
    # The server is gone: nothing listens on its port any more.
    fleet = make_fleet(
        tmp_path,
        [{"id": "t", "agent": "writer", "prompt": "x", "retries": 1}],
        agents={"writer": api_agent(url)},
    )
    run = await harness.run(fleet)
    finished = run.of(EventKind.ATTEMPT_FINISHED, "t")
    assert len(finished) == 2 and all(e.data["error"].startswith("ConnectError") for e in finished)
    assert len(run.of(EventKind.RETRY_SCHEDULED, "t")) == 1
