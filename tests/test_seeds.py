"""The seeds' fleets in config/ reproduce their articles' shape in the simulator
(virtual time: these are the simulator's figures, not the machine's timings)."""

from __future__ import annotations

from pathlib import Path

from fleetdeck.config import load_fleet
from fleetdeck.history import History, stage_models
from fleetdeck.lab import PolicyFigures, simulate_policies

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def _figures(name: str, runs: int) -> dict[str, PolicyFigures]:
    fleet = load_fleet(CONFIG_DIR / f"{name}.toml")
    history = History()
    models = stage_models(fleet, history)
    policies = ["sequential", "wave", "pipelined", "adaptive"]
    figures = simulate_policies(fleet, models, history, policies, runs=runs, seed=1)
    return {figure.policy: figure for figure in figures}


def test_operum_pipelining_a_chain_of_four_at_5_percent_compounds_failures() -> None:
    figures = _figures("seed-operum", 1000)
    sequential, pipelined = figures["sequential"], figures["pipelined"]
    # The article: 16-18% of batches; a chain's arithmetic: 1 - 0.95^3 = 14.3%.
    assert 0.10 <= pipelined.compound_run_rate <= 0.20
    assert pipelined.rework > 0
    # One task in flight never builds on unchecked work.
    assert sequential.compound_run_rate == sequential.rework == 0.0
    # ... and is slower: pipelining overlaps coding with the upstream's CI.
    assert pipelined.makespan_median < sequential.makespan_median
    assert figures["wave"].compound_run_rate == figures["adaptive"].compound_run_rate == 0.0


def test_gem_team_the_dag_is_over_three_times_faster_than_the_pipeline() -> None:
    figures = _figures("seed-gem-team", 50)
    assert figures["sequential"].makespan_median / figures["wave"].makespan_median > 3.0


def test_orchastra_four_generations_and_a_hundred_posts_three_times_faster() -> None:
    four = _figures("seed-orchastra", 5)
    assert four["sequential"].makespan_median / four["wave"].makespan_median == 3.0
    hundred = _figures("seed-orchastra-100", 2)
    assert 2.9 < hundred["sequential"].makespan_median / hundred["wave"].makespan_median <= 3.0
