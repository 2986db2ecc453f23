"""The seeds' fleets in config/ reproduce their articles' shape in the simulator
(virtual time: these are the simulator's figures, not the machine's timings), and
one of them in a real run, by the order of its attempts rather than by its timings
(those are in the README's tables, from scripts/seeds.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from fleetdeck.config import load_fleet
from fleetdeck.history import History, stage_models
from fleetdeck.lab import PolicyFigures, simulate_policies

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
SEEDS_SCRIPT = CONFIG_DIR.parent / "scripts" / "seeds.py"


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


def _seeds_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seeds_script", SEEDS_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gem_team_run_for_real_under_wave_runs_the_five_analyses_at_once(tmp_path: Path) -> None:
    """scripts/seeds.py's real run of the gem-team fleet (real demo processes, ~3 s):
    the DAG's shape is in the journal: the five analyses all started before any of
    them ended, and the merge started once all five had ended."""
    seeds = _seeds_script()
    # Demo seed 5 (the config's own): no analysis fails, so each runs once.
    report = seeds.run_real("seed-gem-team", "wave", 5, tmp_path)
    assert report["completion_rate"] == 1.0 and report["attempts"] == 6
    command = [sys.executable, "-m", "fleetdeck", "report", str(tmp_path / "state"), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    attempts = json.loads(done.stdout)["attempts"]
    analyses = [attempt for attempt in attempts if attempt["worker"] == "analyser"]
    (merge,) = [attempt for attempt in attempts if attempt["worker"] == "merger"]
    assert len(analyses) == 5
    # ISO timestamps of one clock and format: their order is the string order.
    assert max(attempt["started_at"] for attempt in analyses) < min(
        attempt["finished_at"] for attempt in analyses
    )
    assert merge["started_at"] >= max(attempt["finished_at"] for attempt in analyses)
    # The script reads the report as `simulate --json` names its figures.
    figures = seeds.summarise([report])
    assert figures["runs"] == 1 and figures["makespan_median"] == report["makespan"]
