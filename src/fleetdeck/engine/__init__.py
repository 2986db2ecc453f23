"""The engine: a pure core shared with the simulator, and the asyncio shell that runs it.

- `core`: the task table and every transition of the lifecycle (no I/O).
- `scheduler`: the launch decision (pure).
- `commands`: the operator's commands, as transitions of the core.
- `clock`: time and timers for the core (virtual for the simulator and tests).
- `takeup`: an unfinished run's core rebuilt from the journal.
- `shell`: the asyncio `Engine`, which carries out the core's effects.
- `launch`, `views`: what executors are asked to run, what views are shown.

`Engine`, `RunResult` and `CommandError` are importable from here; the shell is
loaded only when one of them is asked for, so the pure modules (the simulator's,
resume's) do not bring asyncio, SQLite and the executors with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetdeck.engine.core import CommandError
    from fleetdeck.engine.shell import Engine, RunResult, estimated_durations

__all__ = ["CommandError", "Engine", "RunResult", "estimated_durations"]


def __getattr__(name: str) -> Any:
    if name == "CommandError":
        from fleetdeck.engine.core import CommandError

        return CommandError
    if name in ("Engine", "RunResult", "estimated_durations"):
        from fleetdeck.engine import shell

        return getattr(shell, name)
    raise AttributeError(f"module 'fleetdeck.engine' has no attribute {name!r}")
