"""Hosts' health as the core sees it: slots follow it, and work stranded on hosts
that failed for good is failed with the reason.

Executors report on their hosts (up, down, failed); this module turns each
report into what it means for the run: the host's slots count or not, a change
is told as an event, and a host that failed for good fails the waiting tasks
that have no other host to run on.
"""

from __future__ import annotations

from typing import Any

from fleetdeck.engine import ends
from fleetdeck.engine.core import Core
from fleetdeck.executors.base import HostHealth, HostState
from fleetdeck.model import LOCAL_HOST, EventKind, Stage
from fleetdeck.stages import workers


class HostWatch:
    """The last word of every host, and what follows from each new one."""

    def __init__(self, core: Core) -> None:
        self.core = core
        # This machine is up from the start; other hosts once their executor says so.
        self.health: dict[str, HostHealth] = {LOCAL_HOST: HostHealth(LOCAL_HOST, HostState.UP)}

    def update(self, health: HostHealth) -> None:
        """An executor's report on its host: update slots, tell on every change."""
        core = self.core
        previous = self.health.get(health.host)
        self.health[health.host] = health
        core.capacity.set_host_up(health.host, health.state is HostState.UP)
        if previous is None or previous.state is not health.state:
            details: dict[str, Any] = {"state": health.state}
            if health.latency is not None:
                details["latency"] = round(health.latency, 4)
            if health.load is not None:
                details["load"] = list(health.load)
            if health.reason:
                details["reason"] = health.reason
            kind = EventKind.HOST_UP if health.state is HostState.UP else EventKind.HOST_DOWN
            core.emit(kind, None, host=health.host, **details)
        if health.state is HostState.FAILED and not core.stopping:
            ends.fail_stranded(core, self.usable, self.why_unusable)
        core.effects.schedule_soon()

    def usable(self, stage: Stage, worker: str) -> bool:
        """False when every host of `worker` has failed for good."""
        spec = workers(self.core.fleet.config, stage)[worker]
        return any(
            (health := self.health.get(host)) is None or health.state is not HostState.FAILED
            for host in spec.host_names
        )

    def why_unusable(self, stage: Stage, worker: str) -> str:
        """What became of each host of `worker`."""
        hosts = workers(self.core.fleet.config, stage)[worker].host_names
        return "; ".join(
            f"{host}: {health.reason or health.state}"
            for host in hosts
            if (health := self.health.get(host)) is not None
        )
