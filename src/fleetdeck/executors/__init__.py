"""Executors run attempts: `local` (subprocesses) and, later, SSH hosts."""

from fleetdeck.executors.base import (
    AttemptProcess,
    Executor,
    HostLostError,
    LaunchError,
    LaunchRequest,
)

__all__ = ["AttemptProcess", "Executor", "HostLostError", "LaunchError", "LaunchRequest"]
