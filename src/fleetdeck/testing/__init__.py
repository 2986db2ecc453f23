"""What tests and benchmarks need to drive the engine without real processes.

- `ManualExecutor`: an executor whose attempts end when the test says so
  (`finish`, `lose`), or at once as scripted; it records every launch.
- `InstantExecutor`: every attempt succeeds as soon as it starts, at no cost,
  so that a benchmark measures the engine alone.

Shipped with fleetdeck so that benchmarks and tests share one copy; it imports
neither pytest nor Textual, and nothing of the engine.
"""

from __future__ import annotations

from fleetdeck.testing.executors import LOST, InstantExecutor, Lost, ManualExecutor, ManualProcess

__all__ = ["LOST", "InstantExecutor", "Lost", "ManualExecutor", "ManualProcess"]
