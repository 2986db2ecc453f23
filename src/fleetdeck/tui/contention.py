"""The contention pane: runners, agents and hosts, how busy, who waits, over time."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from fleetdeck.executors.base import HostState
from fleetdeck.model import Stage
from fleetdeck.snapshot import FleetSnapshot, PoolView
from fleetdeck.text import format_seconds
from fleetdeck.tui.lines import LinesPane
from fleetdeck.tui.render import cut, short_seconds, size, sparkline

_HOST_STYLES = {HostState.UP: "green", HostState.DOWN: "yellow", HostState.FAILED: "bold red"}
# Below this many cells a pool's history goes on a line of its own.
_NARROW = 60
_BUSY = 6  # " 12/16"
_WAITING = 9  # "queue 12 "


class ContentionPane(LinesPane):
    """Per runner: busy/total, queue, queue wait, a sparkline of the queue over time.
    Per agent: busy/total, tasks waiting for a slot, CPU and memory of its attempts.
    Per host: health, attempts running, latency and load."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Contention"

    def show(self, snapshot: FleetSnapshot, *, width: int) -> None:
        """Render `snapshot` for a pane `width` cells wide (border included)."""
        inner = width - 4  # border and padding
        narrow = inner < _NARROW
        longest = max(
            [len(pool.name) for pool in snapshot.pools] + [len(h.name) for h in snapshot.hosts],
            default=4,
        )
        name_width = min(12 if narrow else 20, longest + 3)
        detail_width = inner - name_width - _BUSY - _WAITING if narrow else 34
        spark_width = inner - 2 if narrow else inner - name_width - _BUSY - _WAITING - detail_width
        cpu: dict[str, float] = {}
        rss: dict[str, int] = {}
        for attempt in snapshot.running:
            if attempt.cpu_percent is not None:
                cpu[attempt.worker] = cpu.get(attempt.worker, 0.0) + attempt.cpu_percent
            if attempt.rss_bytes is not None:
                rss[attempt.worker] = rss.get(attempt.worker, 0) + attempt.rss_bytes
        widths = _Widths(name_width, detail_width, spark_width, narrow)
        lines: list[Text] = []
        # Runners first: the CI queue is the contended resource.
        for pool in sorted(snapshot.pools, key=lambda p: p.stage is Stage.AGENT):
            lines.extend(_pool_lines(pool, widths, cpu.get(pool.name), rss.get(pool.name)))
        for host in snapshot.hosts:
            detail = []
            if host.latency is not None:
                detail.append(f"{host.latency * 1000:.0f}ms")
            if host.load is not None:
                detail.append(f"load {host.load[0]:.2f}")
            if host.reason and host.state is not HostState.UP:
                detail.append(host.reason)
            line = Text(f"◆ {host.name}"[:name_width].ljust(name_width), style="bold")
            line.append(host.state.value.rjust(_BUSY - 1) + " ", style=_HOST_STYLES[host.state])
            line.append(f"{host.running} run".ljust(_WAITING))
            line.append_text(cut(" ".join(detail), max(8, inner - len(line))))
            lines.append(line)
        self.show_lines(lines)


@dataclass(slots=True, frozen=True)
class _Widths:
    name: int
    detail: int
    spark: int
    narrow: bool


def _pool_lines(pool: PoolView, widths: _Widths, cpu: float | None, rss: int | None) -> list[Text]:
    """One line per pool, or two when narrow (the history under it)."""
    full = pool.total > 0 and pool.busy >= pool.total
    if pool.stage is Stage.CI:
        label = Text(f"◉ {pool.name}", style="cyan")
        waiting = Text(f"queue {pool.waiting}", style="bold yellow" if pool.waiting else "dim")
        if pool.wait_mean is None:
            detail = "wait -"
        elif widths.narrow:
            detail = f"wait {short_seconds(pool.wait_mean)}/{short_seconds(pool.wait_p95)}"
        else:
            detail = f"wait {format_seconds(pool.wait_mean)} p95 {format_seconds(pool.wait_p95)}"
        if pool.oldest_wait is not None:
            # Past waits count once a task starts CI; this one is still growing.
            detail = f"oldest {short_seconds(pool.oldest_wait)} · {detail}"
        values, ceiling, spark_style = [s.waiting for s in pool.history], None, "yellow"
    else:
        label = Text(f"▶ {pool.name}", style="green")
        waiting = Text(f"wait {pool.waiting}", style="yellow" if pool.waiting else "dim")
        detail = "" if cpu is None else f"cpu {cpu:.0f}% mem {size(rss)}"
        values, ceiling, spark_style = [s.busy for s in pool.history], max(1, pool.total), "green"
    line = cut(label, widths.name - 1)
    line.pad_right(widths.name - len(line))
    line.append(
        f"{pool.busy}/{pool.total}".rjust(_BUSY - 1) + " ", style="bold red" if full else ""
    )
    waiting.pad_right(max(1, _WAITING - len(waiting)))  # a space even past 999
    line.append_text(waiting)
    if widths.narrow:
        # Counts on the first line; the detail and the history share the second.
        second = Text("  ").append_text(cut(detail, widths.spark * 2 // 3))
        second.append(" " if detail else "")
        room = widths.spark - len(second) + 2
        second.append(sparkline(values, max(0, room), ceiling=ceiling), style=spark_style)
        return [line, second]
    line.append_text(cut(detail, widths.detail))
    history = Text(sparkline(values, widths.spark, ceiling=ceiling), style=spark_style)
    line.pad_right(widths.name + _BUSY + _WAITING + widths.detail - len(line))
    return [line.append_text(history)]
