"""The engine: a pure core shared with the simulator, and the asyncio shell that runs it.

- `core`: the task table and every transition of the lifecycle (no I/O).
- `scheduler`: the launch decision (pure).
- `commands`: the operator's commands, as transitions of the core.
- `clock`: time and timers for the core (virtual for the simulator and tests).
- `takeup`: an unfinished run's core rebuilt from the journal.
- `shell`: the asyncio `Engine`, which carries out the core's effects.
- `launch`, `views`: what executors are asked to run, what views are shown.
"""

from fleetdeck.engine.core import CommandError
from fleetdeck.engine.shell import Engine, RunResult, estimated_durations

__all__ = ["CommandError", "Engine", "RunResult", "estimated_durations"]
