"""Executors run attempts: `local` (subprocesses), SSH hosts, and API agents (`api`)."""

from __future__ import annotations

from fleetdeck.config import Fleet
from fleetdeck.executors.base import (
    AttemptProcess,
    Executor,
    HostHealth,
    HostLostError,
    HostState,
    LaunchError,
    LaunchRequest,
    Usage,
)
from fleetdeck.model import API_HOST, LOCAL_HOST

__all__ = [
    "AttemptProcess",
    "Executor",
    "HostHealth",
    "HostLostError",
    "HostState",
    "LaunchError",
    "LaunchRequest",
    "Usage",
    "build_executors",
]


def build_executors(fleet: Fleet, *, adopt_orphans: bool = False) -> dict[str, Executor]:
    """One executor per host of `fleet`: this machine, and each `[hosts.NAME]`.

    `adopt_orphans` is for a process that made itself a child subreaper (the CLI).
    """
    from fleetdeck.executors.local import LocalExecutor

    grace = fleet.config.fleet.grace_period
    executors: dict[str, Executor] = {
        LOCAL_HOST: LocalExecutor(grace=grace, adopt_orphans=adopt_orphans)
    }
    if fleet.config.hosts:
        # asyncssh (and the cryptography it loads) takes a while to import: only
        # fleets that have SSH hosts pay for it.
        from fleetdeck.executors.ssh import SshExecutor

        for name, spec in fleet.config.hosts.items():
            executors[name] = SshExecutor(name, spec, grace=grace, base_dir=fleet.base_dir)
    if any(agent.kind != "process" for agent in fleet.config.agents.values()):
        # httpx is imported only by fleets that have API agents.
        from fleetdeck.executors.http import HttpExecutor

        executors[API_HOST] = HttpExecutor(fleet)
    return executors
