"""The TUI over a fleet of API agents against the real local server: the
contention pane says when a throttled agent resumes, and what it has cost."""

from __future__ import annotations

from pathlib import Path

from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import Static

from api_server import api_server
from fleetdeck.config import build_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors import build_executors
from fleetdeck.journal import Journal
from fleetdeck.tui.contention import ContentionPane
from fleetdeck.tui.detail import TaskDetailScreen
from tui_support import app_over, until


def rendered(widget: Widget) -> str:
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, *widget.outer_size)))


async def test_the_contention_pane_shows_a_throttled_agent_and_its_cost(tmp_path: Path) -> None:
    # One request a second on the server; the agent, not told, runs into it.
    with api_server("--latency", "0.05", "--chunk-delay", "0", "--rpm", "60") as server:
        fleet = build_fleet(
            {
                "fleet": {"name": "api", "state_dir": "state"},
                "agents": {
                    "writer": {
                        "kind": "openai",
                        "model": "local",
                        "base_url": server.base_url,
                        "slots": 3,
                        "price": {"input": 100.0, "output": 100.0},
                    }
                },
                "tasks": [{"id": f"t{i}", "agent": "writer", "prompt": "x"} for i in range(3)],
            },
            source="api.toml",
            base_dir=tmp_path,
        )
        journal = Journal(tmp_path / "state")
        engine = Engine(fleet, journal=journal, executors=build_executors(fleet))
        app = app_over(engine)
        seen: list[str] = []
        async with app.run_test(size=(160, 50)) as pilot:
            pane = app.query_one(ContentionPane)

            def shows(text: str) -> bool:
                seen.append(rendered(pane))
                return text in seen[-1]

            await until(lambda: shows("⏸ throttled until"), timeout=20)
            await until(lambda: app.result is not None, timeout=30)
            await pilot.pause(0.5)
            assert "throttled" not in rendered(pane)
            # Three answers of 40 tokens out, at $100 per million.
            assert " in · 120 out · $0.01" in rendered(pane)
            # The task's detail says what it used.
            await app.push_screen(TaskDetailScreen(app.client, "t0"))
            await pilot.pause(0.3)
            summary = str(app.screen.query_one("#summary", Static).render())
            assert "agent writer  tokens 1 in · 40 out · $0.0041" in summary, summary
            # Every task's detail opens, the throttled one's too (a throttled
            # attempt is shown, not a crash).
            for task in ("t1", "t2"):
                app.pop_screen()
                await app.push_screen(TaskDetailScreen(app.client, task))
                await pilot.pause(0.3)
        journal.close()


async def test_the_load_pane_shows_an_agent_whose_budget_is_spent(tmp_path: Path) -> None:
    from fleetdeck.tui.load import LoadPane

    with api_server("--latency", "0", "--chunk-delay", "0", "--words", "10") as server:
        fleet = build_fleet(
            {
                "fleet": {"name": "api", "state_dir": "state"},
                "agents": {
                    "writer": {
                        "kind": "openai",
                        "model": "local",
                        "base_url": server.base_url,
                        "slots": 1,
                        # A cent a request: spent after the first.
                        "price": {"input": 0, "output": 1000.0},
                        "budget": 0.005,
                    }
                },
                "tasks": [{"id": f"t{i}", "agent": "writer", "prompt": "x"} for i in range(2)],
            },
            source="api.toml",
            base_dir=tmp_path,
        )
        journal = Journal(tmp_path / "state")
        engine = Engine(fleet, journal=journal, executors=build_executors(fleet))
        app = app_over(engine)
        async with app.run_test(size=(160, 50)) as pilot:
            pane = app.query_one(LoadPane)
            await until(lambda: app.result is not None, timeout=30)
            await pilot.pause(0.5)
            text = rendered(pane)
            assert "⏸ budget spent on writer: $0.0100 of $0.005" in text, text
            assert "attention 2" in text  # the agent, and t1 that failed for it
        journal.close()
