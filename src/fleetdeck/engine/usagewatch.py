"""A CLI agent's usage limit, seen in its attempt's log once the attempt ended.

The shell asks `usage_limit_hit` after each agent attempt of an agent with a
`usage_limit`: if the end of the log matches the pattern, the attempt ends as
`throttled` (its details say until when: fleetdeck.usagelimit), whatever its
exit status, and the core pauses the agent and runs the task again then.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

from fleetdeck.config import Fleet
from fleetdeck.model import Attempt, Stage
from fleetdeck.usagelimit import throttle_details

# How much of the log's end is read: the message comes last, and a chatty agent's
# log may be megabytes.
TAIL_BYTES = 64 * 1024


def watches_usage(fleet: Fleet) -> bool:
    """True when some agent of `fleet` has a `usage_limit`."""
    return any(agent.usage_limit is not None for agent in fleet.config.agents.values())


async def usage_limit_hit(fleet: Fleet, attempt: Attempt) -> dict[str, Any] | None:
    """The throttled details of `attempt` if its agent's usage limit shows in
    its log, else None."""
    if attempt.stage is not Stage.AGENT:
        return None
    agent = fleet.config.agents.get(attempt.worker)
    limit = None if agent is None else agent.usage_limit
    if limit is None:
        return None
    text = await asyncio.to_thread(_tail, attempt.log_path)
    return throttle_details(limit.pattern, limit.resume_after, text, datetime.now(UTC))


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - TAIL_BYTES))
            return log.read().decode("utf-8", "replace")
    except OSError:
        return ""
