"""CLI agents that hit their provider's usage limit: the reset time read from their
output, and a real run in which the agent pauses and resumes by itself."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import EngineHarness, make_fleet
from fleetdeck.model import EventKind, Outcome
from fleetdeck.usagelimit import reset_delay, throttle_details

NOW = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Usage limit reached. Try again in 4 minutes.", 240),
        ("rate limited, retry in 30s", 30),
        ("try again in 1 hour and 30 minutes", 5400),
        ("try again in 2h 30m", 9000),
        ("5-hour limit reached - resets at 3pm (UTC)", 3600),
        ("limit reached, resets 3:30 PM UTC", 5400),
        ("reset at 13:00 UTC", 23 * 3600),  # already past today: tomorrow's
        ("Claude AI usage limit reached|1796570400", 1796570400 - NOW.timestamp()),
        ("resets 5", None),  # not a time of day
        ("usage limit reached", None),
    ],
)
def test_the_reset_time_is_read_from_common_messages(text: str, seconds: float | None) -> None:
    assert reset_delay(text, NOW) == seconds


def test_no_reset_time_falls_back_to_resume_after() -> None:
    details = throttle_details("usage limit", 300, "ok\nUsage limit reached.\n", NOW)
    assert details == {"retry_after": 300, "reason": "usage limit: Usage limit reached."}
    assert throttle_details("usage limit", 300, "all fine\n", NOW) is None
    # The time on the line after the matching one.
    later = throttle_details("limit reached", 300, "Limit reached.\nResets at 4pm (UTC)\n", NOW)
    assert later is not None and later["retry_after"] == 7200


# The agent hits its limit on its first call, once for the whole fleet: the marker
# file is the provider's counter.
AGENT = """
if [ ! -e "$MARK" ]; then touch "$MARK"; echo "working on $FLEETDECK_TASK";
  echo "Usage limit reached. Try again in 2 seconds."; exit 1; fi
echo "did $FLEETDECK_TASK"
"""


async def test_a_cli_agent_at_its_usage_limit_pauses_and_resumes(
    harness: EngineHarness, tmp_path: Path
) -> None:
    mark = tmp_path / "limited"
    fleet = make_fleet(
        tmp_path,
        [{"id": "a", "agent": "coder", "retries": 0}, {"id": "b", "agent": "coder", "retries": 0}],
        agents={
            "coder": {
                "command": ["sh", "-c", AGENT],
                "env": {"MARK": str(mark)},
                "slots": 1,
                "usage_limit": {"pattern": "usage limit|rate limit", "resume_after": 60},
            }
        },
    )
    run = await harness.run(fleet)
    # Nothing failed, though neither task had a retry to spend.
    assert run.result.exit_code == 0
    throttled = run.of(EventKind.ATTEMPT_FINISHED, outcome=Outcome.THROTTLED)
    assert len(throttled) == 1 and throttled[0].data["retry_after"] == 2
    assert "Try again in 2 seconds" in throttled[0].data["reason"]
    assert not run.of(EventKind.RETRY_SCHEDULED)
    # Nothing started on the agent until it resumed, and the task ran again then.
    limited = throttled[0].task
    starts = [e for e in run.of(EventKind.ATTEMPT_STARTED) if e.ts > throttled[0].ts]
    assert starts and min(e.ts for e in starts) >= throttled[0].ts + 1.95
    assert len(run.of(EventKind.ATTEMPT_STARTED, limited)) == 2
    assert run.of(EventKind.TASK_SUCCEEDED, limited)


# The agent prints its limit's message, the reset on the next line, and then
# waits (as some CLIs do) with a child of its own; the second time it works.
HANGS = """
if [ ! -e "$MARK" ]; then touch "$MARK"; sleep 60 & echo $! > "$CHILD"
  echo "Usage limit reached."; sleep 0.2; echo "Try again in 2 seconds."; wait; fi
echo "did $FLEETDECK_TASK"
"""


async def test_a_cli_agent_that_hangs_at_its_usage_limit_is_stopped_as_throttled(
    harness: EngineHarness, tmp_path: Path
) -> None:
    from conftest import alive

    fleet = make_fleet(
        tmp_path,
        [{"id": "a", "agent": "coder", "retries": 0}],
        agents={
            "coder": {
                "command": ["sh", "-c", HANGS],
                "env": {"MARK": str(tmp_path / "limited"), "CHILD": str(tmp_path / "child")},
                "usage_limit": {"pattern": "usage limit", "resume_after": 60},
                # Far off: the message, not the timeout, ends the attempt.
                "timeout": 30,
            }
        },
        grace_period=0.5,
    )
    run = await harness.run(fleet)
    assert run.result.exit_code == 0
    (throttled,) = run.of(EventKind.ATTEMPT_FINISHED, outcome=Outcome.THROTTLED)
    # The reset time from the line after the message, read while it ran.
    assert throttled.data["retry_after"] == 2
    assert throttled.data["reason"] == "usage limit: Usage limit reached."
    assert throttled.data["duration"] < 10  # stopped when it said so, not at its timeout
    # Its whole tree was stopped, the child it left waiting too.
    assert not alive(int((tmp_path / "child").read_text()))
    assert len(run.of(EventKind.ATTEMPT_STARTED, "a")) == 2
    assert run.of(EventKind.TASK_SUCCEEDED, "a")
