"""A CLI agent's usage limit, seen in its attempt's log as it is written, and
once the attempt ended.

Some agents print the limit's message and then wait (for the reset, or for a
key press) instead of exiting: while an attempt of an agent with a
`usage_limit` runs, the shell follows its log (`follow_usage`, the follower
the views use: fleetdeck.logtail) and, at a line that matches the pattern, has
the core stop the attempt as `throttled` (its whole process tree, the normal
stop path). The shell also asks `usage_limit_hit` when such an attempt ends by
itself: if the end of the log matches, the attempt ends as `throttled`,
whatever its exit status. Either way its details say until when
(fleetdeck.usagelimit), and the core pauses the agent and runs the task again then.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fleetdeck.apispec import UsageLimit
from fleetdeck.config import Fleet
from fleetdeck.logtail import LogFollower
from fleetdeck.model import Attempt, Stage
from fleetdeck.usagelimit import throttle_details

# How much of the log's end is read: the message comes last, and a chatty agent's
# log may be megabytes.
TAIL_BYTES = 64 * 1024


def watches_usage(fleet: Fleet) -> bool:
    """True when some agent of `fleet` has a `usage_limit`."""
    return any(agent.usage_limit is not None for agent in fleet.config.agents.values())


# How often a running attempt's log is read for the usage limit's message.
FOLLOW_SECONDS = 0.5


def usage_limit_of(fleet: Fleet, attempt: Attempt) -> UsageLimit | None:
    """The `usage_limit` of `attempt`'s agent, if it is an agent attempt and has one."""
    if attempt.stage is not Stage.AGENT:
        return None
    agent = fleet.config.agents.get(attempt.worker)
    return None if agent is None else agent.usage_limit


async def follow_usage(
    limit: UsageLimit,
    attempt: Attempt,
    hit: Callable[[dict[str, Any]], None],
    *,
    interval: float = FOLLOW_SECONDS,
) -> None:
    """Read `attempt`'s log as it grows until a line matches `limit.pattern`;
    then, one read later (the reset time is often on the next line), call
    `hit` with the throttled details. Runs until then, or until cancelled."""
    pattern = re.compile(limit.pattern, re.IGNORECASE)
    follower = LogFollower(attempt.log_path)
    said: list[str] | None = None
    while said is None:
        await asyncio.sleep(interval)
        lines = await asyncio.to_thread(follower.read)
        said = next((lines[i:] for i, line in enumerate(lines) if pattern.search(line)), None)
    await asyncio.sleep(interval)
    said += await asyncio.to_thread(follower.read)
    details = throttle_details(limit.pattern, limit.resume_after, "\n".join(said), _now())
    if details is not None:
        hit(details)


def _now() -> datetime:
    return datetime.now(UTC)


async def usage_limit_hit(fleet: Fleet, attempt: Attempt) -> dict[str, Any] | None:
    """The throttled details of `attempt` if its agent's usage limit shows in
    its log, else None."""
    limit = usage_limit_of(fleet, attempt)
    if limit is None:
        return None
    text = await asyncio.to_thread(_tail, attempt.log_path)
    return throttle_details(limit.pattern, limit.resume_after, text, _now())


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - TAIL_BYTES))
            return log.read().decode("utf-8", "replace")
    except OSError:
        return ""
