"""Full garbage collections wait for a quiet keyboard, but not forever."""

from __future__ import annotations

import gc

from fleetdeck.tui import collector
from fleetdeck.tui.collector import IdleCollector


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[IdleCollector, Clock, list[float]]:
    clock = Clock()
    done: list[float] = []
    return IdleCollector(clock=clock, collect=lambda: done.append(clock.now)), clock, done


def test_python_collects_the_young_generations_and_gets_its_thresholds_back() -> None:
    before = gc.get_threshold()
    idle, _, _ = make()
    idle.start()
    try:
        young, middle, full = gc.get_threshold()
        assert (young, middle) == before[:2]
        assert full > 1000 * before[2]
    finally:
        idle.stop()
    assert gc.get_threshold() == before


def test_a_full_collection_comes_when_due_and_the_keyboard_is_quiet() -> None:
    idle, clock, done = make()
    clock.now += collector.EVERY - 1
    assert not idle.tick()  # not due yet
    clock.now += 1
    idle.input_seen()
    seen = clock.now
    clock.now = seen + collector.QUIET / 2
    assert not idle.tick()  # due, but a key came a moment ago
    clock.now = seen + collector.QUIET * 1.01
    assert idle.tick()
    assert done == [clock.now]
    assert not idle.tick()  # the next one is EVERY seconds away


def test_a_busy_keyboard_delays_a_full_collection_at_most_MOST_seconds() -> None:
    idle, clock, done = make()
    while not done:
        clock.now += collector.QUIET / 2
        idle.input_seen()
        idle.tick()
    assert 100.0 + collector.MOST <= done[0] < 100.0 + collector.MOST + collector.QUIET
