"""Slot accounting for agents and runners over their hosts.

An agent or runner has `slots` per host it runs on. A launch takes a slot on the
healthy host with the most free slots (ties go to the host named first), and an
SSH host may cap the sessions it carries for everyone (`max_sessions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleetdeck.config import HostSpec, WorkerSpec
from fleetdeck.model import Stage


@dataclass(slots=True)
class _Pool:
    hosts: tuple[str, ...]
    slots_per_host: int
    busy: dict[str, int]
    # Held back (a paused API agent: rate limit, budget): no free slot anywhere.
    held: bool = False


@dataclass(slots=True, frozen=True)
class PoolUsage:
    """Busy and total slots of one agent or runner, over its healthy hosts."""

    busy: int
    total: int


class Capacity:
    """Who holds which slot, per stage kind (agents, runners), worker and host."""

    def __init__(
        self,
        agents: Mapping[str, WorkerSpec],
        runners: Mapping[str, WorkerSpec],
        hosts: Mapping[str, HostSpec],
        trains: Mapping[str, WorkerSpec] | None = None,
    ) -> None:
        self._pools: dict[Stage, dict[str, _Pool]] = {
            Stage.AGENT: {name: _pool(spec) for name, spec in agents.items()},
            Stage.CI: {name: _pool(spec) for name, spec in runners.items()},
            Stage.MERGE: {name: _pool(spec) for name, spec in (trains or {}).items()},
        }
        self._session_cap = {name: spec.max_sessions for name, spec in hosts.items()}
        self._sessions: dict[str, int] = {}
        self._down: set[str] = set()

    def set_host_up(self, host: str, up: bool) -> None:
        """Mark `host` healthy or not; a host that is down gets no launches."""
        if up:
            self._down.discard(host)
        else:
            self._down.add(host)

    def free(self, stage: Stage, worker: str) -> int:
        """Free slots of `worker` over its usable hosts."""
        pool = self._pools[stage][worker]
        # A loop, not sum() over a generator: asked at every launch decision.
        free = 0
        for host in pool.hosts:
            free += self._free_on(pool, host)
        return free

    def acquire(self, stage: Stage, worker: str) -> str | None:
        """Take a slot of `worker`; returns the host chosen, or None when all are busy."""
        pool = self._pools[stage][worker]
        best_host: str | None = None
        best_free = 0
        for host in pool.hosts:
            free = self._free_on(pool, host)
            if free > best_free:
                best_host, best_free = host, free
        if best_host is not None:
            pool.busy[best_host] += 1
            self._sessions[best_host] = self._sessions.get(best_host, 0) + 1
        return best_host

    def take(self, stage: Stage, worker: str, host: str) -> None:
        """Count a slot of `worker` on `host` as busy, even past its number of slots:
        an attempt found running after a restart holds one, whatever the config
        says now."""
        pool = self._pools[stage][worker]
        pool.busy[host] = pool.busy.get(host, 0) + 1
        self._sessions[host] = self._sessions.get(host, 0) + 1

    def release(self, stage: Stage, worker: str, host: str) -> None:
        """Give back a slot taken by `acquire` or `take`."""
        pool = self._pools[stage][worker]
        pool.busy[host] -= 1
        self._sessions[host] -= 1

    def usage(self, stage: Stage, worker: str) -> PoolUsage:
        """Busy and total slots of `worker` (total over hosts that are up)."""
        pool = self._pools[stage][worker]
        up = [host for host in pool.hosts if host not in self._down]
        busy = sum(pool.busy[host] for host in pool.hosts)
        return PoolUsage(busy=busy, total=pool.slots_per_host * len(up))

    def sessions(self, host: str) -> int:
        """Attempts running on `host` now."""
        return self._sessions.get(host, 0)

    def hold(self, stage: Stage, worker: str, held: bool) -> None:
        """Hold `worker` back (no free slot while `held`), or let it go again."""
        self._pools[stage][worker].held = held

    def _free_on(self, pool: _Pool, host: str) -> int:
        if host in self._down or pool.held:
            return 0
        free = pool.slots_per_host - pool.busy[host]
        cap = self._session_cap.get(host)
        if cap is not None:
            free = min(free, cap - self._sessions.get(host, 0))
        return max(0, free)


def _pool(spec: WorkerSpec) -> _Pool:
    hosts = spec.host_names
    return _Pool(hosts=hosts, slots_per_host=spec.slots, busy=dict.fromkeys(hosts, 0))
