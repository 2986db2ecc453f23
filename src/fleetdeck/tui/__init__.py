"""The Textual view. Nothing outside this package imports Textual."""

from fleetdeck.tui.app import FleetApp, run_tui

__all__ = ["FleetApp", "run_tui"]
