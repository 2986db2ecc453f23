"""Simulated agents and CI jobs for the example fleets (see __main__.py)."""
