"""The local API server (`python -m fleetdeck.demo.api`) as a real process for tests."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class ApiServer:
    """A running `fleetdeck.demo.api` on 127.0.0.1 and a free port."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fleetdeck.demo.api", "--port", "0", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening on "), line
        self.url = line.split()[-1]

    @property
    def base_url(self) -> str:
        """What an agent's `base_url` names."""
        return self.url + "/v1"

    def stats(self) -> dict[str, Any]:
        """What the server counted (GET /stats)."""
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as answer:
            result: dict[str, Any] = json.load(answer)
            return result

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()


@contextmanager
def api_server(*args: str) -> Iterator[ApiServer]:
    """Start the server with these options; stop it at the end."""
    server = ApiServer(*args)
    try:
        yield server
    finally:
        server.close()
