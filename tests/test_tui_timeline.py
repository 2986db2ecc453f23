"""The timeline's words on the selected bar."""

from __future__ import annotations

from dataclasses import replace

from fleetdeck.model import Stage
from fleetdeck.snapshot import AttemptRecord
from fleetdeck.tui.timeline import waited

AGENT = AttemptRecord(
    attempt_id=1,
    task="t",
    stage=Stage.AGENT,
    number=1,
    worker="coder",
    host="local",
    queued_at=None,
    started_at=10.0,
    finished_at=12.5,
    outcome=None,
    exit_code=None,
    error=None,
    log_path="t.1.agent.log",
    output_path="t.1.agent.out",
)


def test_an_agent_attempt_never_waited_though_the_core_stamps_its_queued_at() -> None:
    # The core stamps queued_at on the agent attempt when its task joins the CI
    # queue, after the attempt started: no wait, and never a negative one.
    assert waited(replace(AGENT, queued_at=12.52)) is None
    assert waited(replace(AGENT, queued_at=9.0)) is None


def test_a_ci_attempt_waited_from_its_queueing_to_its_start() -> None:
    ci = replace(AGENT, stage=Stage.CI, queued_at=12.5, started_at=14.0)
    assert waited(ci) == 1.5
    assert waited(replace(ci, queued_at=14.5)) is None  # clocks disagree: say nothing
    assert waited(replace(ci, started_at=None)) is None
