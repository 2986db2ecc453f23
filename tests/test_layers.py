"""The layers: every module outside the TUI loads without Textual.

Harlequin's check, beside the import-linter contracts in pyproject.toml: each
module is imported in a fresh interpreter, so one module's imports cannot hide
another's, and lazy imports inside functions are left to the linter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import fleetdeck

PACKAGE = Path(fleetdeck.__file__).parent


def modules_outside_the_tui() -> list[str]:
    """Every module of the fleetdeck package but the TUI's and `__main__` scripts,
    found on disk (importing packages to list them would load what they import)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] == "__main__" or parts[:2] == ("fleetdeck", "tui"):
            continue
        names.append(".".join(parts))
    return names


def loaded_views(module: str) -> list[str]:
    """The Textual and fleetdeck.tui modules loaded by importing `module` alone."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'"
        " or m == 'fleetdeck.tui' or m.startswith('fleetdeck.tui.'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout)
    return found


@pytest.mark.parametrize("module", modules_outside_the_tui())
def test_a_module_outside_the_tui_loads_without_textual(module: str) -> None:
    assert loaded_views(module) == []


def test_the_check_covers_the_core_and_would_see_textual() -> None:
    """Not vacuous: the modules found include the core, and the probe does see
    Textual where it is loaded."""
    found = modules_outside_the_tui()
    core = {
        "fleetdeck.cli",
        "fleetdeck.config",
        "fleetdeck.engine",
        "fleetdeck.executors",
        "fleetdeck.executors.local",
        "fleetdeck.executors.ssh",
        "fleetdeck.headless",
        "fleetdeck.journal",
        "fleetdeck.policy",
        "fleetdeck.testing",
    }
    assert core <= set(found)
    assert not any(name.startswith("fleetdeck.tui") for name in found)
    assert "textual" in loaded_views("fleetdeck.tui")


# What a view may not load: it sees the engine through fleetdeck.client only.
_BEHIND_THE_CLIENT = ("fleetdeck.engine.shell", "fleetdeck.journal", "fleetdeck.executors")


def loaded_behind_the_client(module: str) -> list[str]:
    """The engine's shell, journal and executor modules loaded by importing `module`."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"hidden = {_BEHIND_THE_CLIENT!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules"
        " if any(m == h or m.startswith(h + '.') for h in hidden))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout)
    return found


@pytest.mark.parametrize("module", ["fleetdeck.tui.app", "fleetdeck.headless"])
def test_a_view_loads_without_the_engine_the_journal_or_the_executors(module: str) -> None:
    """A view attached to a fleet in another process has no engine here: it needs
    only the client and the snapshots."""
    assert loaded_behind_the_client(module) == []
    # Not vacuous: the probe sees them where they are loaded.
    assert "fleetdeck.journal" in loaded_behind_the_client("fleetdeck.engine.shell")
