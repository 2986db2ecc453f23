"""fleetdeck: a terminal supervisor for fleets of AI coding agents and CI runners.

Kept import-free on purpose: simulated agents (`python -m fleetdeck.demo`) import
this package for every attempt, and start-up time is their overhead.
"""

__version__ = "0.1.0"
