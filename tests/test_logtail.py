"""Log lines as a terminal shows them: carriage returns write over the line."""

from __future__ import annotations

from pathlib import Path

from fleetdeck.logtail import LogFollower, overwritten
from fleetdeck.redact import Redactor


def test_a_carriage_return_writes_over_the_line_as_a_terminal_does() -> None:
    assert overwritten("10%\r20%\r100% done") == "100% done"
    assert overwritten("downloading\rok") == "okwnloading"  # what a terminal leaves
    assert overwritten("a line\r") == "a line"  # CRLF line ends
    assert overwritten("\x1b[32m50%\x1b[0m\r\x1b[32m60%\x1b[0m") == "60%"
    assert overwritten("plain") == "plain"


def test_the_detail_log_shows_the_last_state_of_a_progress_line(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"start\r\nfetch  0%\rfetch 50%\rfetch 100%\ndone\n")
    assert LogFollower(str(log)).read() == ["start", "fetch 100%", "done"]


def test_what_is_left_of_a_secret_written_over_is_masked(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"token hunter2-long\rxxxxxxxxx\n")
    redactor = Redactor(["hunter2-long"])
    (line,) = LogFollower(str(log), redact=redactor).read()
    assert "2-long" not in line and "hunter" not in line
