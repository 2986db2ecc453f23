"""The contention pane: runners, agents and hosts, how busy, who waits, over time.

Two layouts. Narrow (an 80-column terminal gives the pane about 30 cells): a
few lines per pool, every figure with its label and never cut; the history
takes what is left of the first line. Wide: one line per pool under column
headers, and the history takes the rest of the width.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.text import Text

from fleetdeck.model import HostState, Stage
from fleetdeck.snapshot import FleetSnapshot, HostView, PoolView
from fleetdeck.text import format_seconds
from fleetdeck.tui.lines import LinesPane
from fleetdeck.tui.render import cut, short_seconds, size, sparkline

_HOST_STYLES = {HostState.UP: "green", HostState.DOWN: "yellow", HostState.FAILED: "bold red"}
# From this many cells inside the border, one line per pool under column headers.
WIDE_AT = 72
_BUSY = 6  # "12/16 "
# The wide layout's columns after the name: (header, width), right-aligned.
_WIDE_COLUMNS = (
    ("busy", 6),
    ("queue", 6),
    ("wait mean", 10),
    ("p95", 7),
    ("oldest", 8),
    ("cpu", 6),
    ("mem", 6),
)
_SPARK_MIN = 4  # fewer cells than this: no history at all


class ContentionPane(LinesPane):
    """Per runner: busy/total, queue length, queue wait (mean, p95, the oldest
    waiting now), the queue over time. Per agent: busy/total, tasks waiting for a
    slot, CPU and memory of its attempts, busy slots over time. Per host: health,
    attempts running, latency and load (when there is more than the local host,
    or it is not up)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Contention"

    def show(self, snapshot: FleetSnapshot, *, width: int) -> None:
        """Render `snapshot` for a pane `width` cells wide (border and padding included)."""
        inner = max(20, width - 4)
        longest = max(
            [len(_label(pool)) for pool in snapshot.pools] + [len(h.name) for h in snapshot.hosts],
            default=4,
        )
        wide = inner >= WIDE_AT
        name_width = min(22 if wide else 14, longest + 3)
        cpu: dict[str, float] = {}
        rss: dict[str, int] = {}
        for attempt in snapshot.running:
            if attempt.cpu_percent is not None:
                cpu[attempt.worker] = cpu.get(attempt.worker, 0.0) + attempt.cpu_percent
            if attempt.rss_bytes is not None:
                rss[attempt.worker] = rss.get(attempt.worker, 0) + attempt.rss_bytes
        layout = _Layout(inner, name_width, wide)
        lines: list[Text] = [layout.header()] if wide else []
        # Runners first: the CI queue is the contended resource.
        for pool in sorted(snapshot.pools, key=lambda p: p.stage is Stage.AGENT):
            use = _Use(cpu.get(pool.name), rss.get(pool.name))
            lines.extend(layout.pool(pool, use))
        # A fleet on this machine alone has nothing to say of hosts (the in-flight
        # pane counts what runs): its rows go to the figures above.
        hosts = snapshot.hosts
        if len(hosts) > 1 or any(host.state is not HostState.UP for host in hosts):
            for host in hosts:
                lines.extend(layout.host(host))
        self.show_lines(lines)


# The glyphs of the task states each pool's stage runs in (tui/render.py).
_POOL_GLYPHS = {
    Stage.AGENT: ("▶", "green"),
    Stage.CI: ("◉", "cyan"),
    Stage.MERGE: ("⇡", "bold blue"),
}


def clock_time(ts: float) -> str:
    """`14:03:12`, local time."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _label(pool: PoolView) -> str:
    """A pool's name as the pane shows it: the merge train by what it is."""
    return "merge train" if pool.stage is Stage.MERGE else pool.name


@dataclass(slots=True, frozen=True)
class _Use:
    """CPU and memory of an agent's attempts (None: not measured)."""

    cpu: float | None
    rss: int | None

    def text(self) -> str:
        cpu = "-" if self.cpu is None else f"{self.cpu:.0f}%"
        return f"cpu {cpu} mem {size(self.rss)}"


@dataclass(slots=True, frozen=True)
class _Layout:
    inner: int  # cells inside border and padding
    name: int  # the name column
    wide: bool

    def _name(self, pool: PoolView) -> Text:
        glyph, style = _POOL_GLYPHS[pool.stage]
        line = cut(Text(f"{glyph} {_label(pool)}", style=style), self.name - 1)
        line.pad_right(self.name - len(line))
        return line

    def header(self) -> Text:
        """The column headers of the wide layout."""
        line = Text(" " * self.name, style="dim")
        for title, width in _WIDE_COLUMNS:
            line.append(title.rjust(width - 1) + " ")
        if self.inner - len(line) >= _SPARK_MIN:
            line.append("history (1/s)")
        return cut(line, self.inner)

    def pool(self, pool: PoolView, use: _Use) -> list[Text]:
        """The lines of one runner or agent."""
        full = pool.total > 0 and pool.busy >= pool.total
        busy = f"{pool.busy}/{pool.total}"
        busy_style = "bold red" if full else ""
        waiting_style = "bold yellow" if pool.waiting else "dim"
        # The history: the CI queue's length, or an agent's busy slots.
        ceiling: int | None = None
        if pool.stage is not Stage.AGENT:
            values, spark_style = [s.waiting for s in pool.history], "yellow"
        else:
            values, ceiling, spark_style = [s.busy for s in pool.history], pool.total, "green"
        if self.wide:
            line = self._name(pool).append(busy.rjust(_BUSY - 1) + " ", style=busy_style)
            line.append(str(pool.waiting).rjust(5) + " ", style=waiting_style)
            if pool.stage is not Stage.AGENT:
                figures = (
                    format_seconds(pool.wait_mean),
                    format_seconds(pool.wait_p95),
                    format_seconds(pool.oldest_wait) if pool.oldest_wait is not None else "",
                    "",
                    "",
                )
            else:
                cpu = "" if use.cpu is None else f"{use.cpu:.0f}%"
                figures = ("", "", "", cpu, "" if use.rss is None else size(use.rss))
            for figure, (_, width) in zip(figures, _WIDE_COLUMNS[2:], strict=True):
                line.append(figure.rjust(width - 1) + " ")
            line.append(self._history(values, ceiling, len(line)), style=spark_style)
            return [line, *self.limits(pool)]
        # Every figure says what it is; the history ends the pool's last line.
        line = self._name(pool).append("busy ", style="dim").append(busy, style=busy_style)
        line.append(" queue ", style="dim").append(str(pool.waiting), style=waiting_style)
        if pool.stage is Stage.AGENT:
            last = Text("  " + use.text(), style="dim")
            return [
                line,
                self._with_history(last, values, ceiling, spark_style),
                *self.limits(pool),
            ]
        # A mean, a 95th percentile, the wait so far of the task at the head.
        wait = Text("  wait ")
        if pool.wait_mean is None:
            wait.append("-", style="dim")
        else:
            wait.append(f"mean {short_seconds(pool.wait_mean)} p95 {short_seconds(pool.wait_p95)}")
        last = Text("  oldest in queue ")
        last.append(short_seconds(pool.oldest_wait), style="bold yellow" if pool.waiting else "dim")
        return [line, wait, self._with_history(last, values, ceiling, spark_style)]

    def limits(self, pool: PoolView) -> list[Text]:
        """An API or CLI agent's limits: held back (until when, why), tokens and cost."""
        lines = []
        if pool.held is not None:
            line = Text("  ⏸ ", style="bold yellow")
            if pool.held_until is not None:
                line.append(f"throttled until {clock_time(pool.held_until)}", style="bold yellow")
            else:
                line.append(pool.held, style="bold yellow")
            lines.append(cut(line, self.inner))
        if pool.tokens is not None:
            tokens_in, tokens_out = pool.tokens
            text = f"  {tokens_in:,} in · {tokens_out:,} out · ${pool.cost or 0.0:.4f}"
            lines.append(cut(Text(text, style="dim"), self.inner))
        return lines

    def _with_history(self, line: Text, values: list[int], ceiling: int | None, style: str) -> Text:
        """`line`, then the history in the cells left (right-aligned), if enough."""
        history = self._history(values, ceiling, len(line) + 1)
        if history:
            line.pad_right(self.inner - len(line) - len(history))
            line.append(history, style=style)
        return line

    def _history(self, values: list[int], ceiling: int | None, used: int) -> str:
        room = self.inner - used
        return sparkline(values, room, ceiling=ceiling) if room >= _SPARK_MIN else ""

    def host(self, host: HostView) -> list[Text]:
        """The line (or, narrow with details, two lines) of one host."""
        detail = []
        if host.latency is not None:
            detail.append(f"latency {host.latency * 1000:.0f}ms")
        if host.load is not None:
            detail.append(f"load {host.load[0]:.2f}")
        if host.reason and host.state is not HostState.UP:
            detail.append(host.reason)
        line = Text(f"◆ {host.name}"[: self.name - 1].ljust(self.name), style="bold")
        line.append(host.state.value.rjust(_BUSY - 1) + " ", style=_HOST_STYLES[host.state])
        line.append(f"{host.running} running")
        if not detail:
            return [line]
        text = " · ".join(detail)
        if self.wide or len(line) + 2 + len(text) <= self.inner:
            return [line.append("  ").append_text(cut(text, self.inner - len(line) - 2))]
        return [line, cut(Text("  " + text, style="dim"), self.inner)]
