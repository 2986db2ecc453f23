"""The supervisor screen: a view over the engine, driven from the keyboard.

The app talks to the engine only through a client (fleetdeck.client): it reads
a `SnapshotFeed` (a snapshot, and the task views that changed) on a timer and
sends commands; it holds no scheduling logic. It starts the run through its
`RunHandle` once the screen is up (fleetdeck.lifecycle, which also owns the
stop signals); the run ends by itself once every task has ended, as headless,
and the screen then stays for browsing until `q`. Quitting before that, the
terminal going away (SIGHUP) or SIGTERM stop the work in flight cleanly before
it exits.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable

from textual import events, on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.driver import Driver
from textual.drivers.linux_driver import LinuxDriver
from textual.screen import Screen
from textual.widgets import DataTable, Input

from fleetdeck.alerts import alert_of, summary
from fleetdeck.client import CommandError, EngineClient, RunHandle, RunOutcome
from fleetdeck.model import Event, EventKind, Stage
from fleetdeck.policy import next_policy
from fleetdeck.tui.choice import ChoiceScreen
from fleetdeck.tui.collector import QUIET, IdleCollector
from fleetdeck.tui.confirm import ConfirmScreen
from fleetdeck.tui.contention import ContentionPane
from fleetdeck.tui.detail import TaskDetailScreen
from fleetdeck.tui.driver import TerminalSafeDriver
from fleetdeck.tui.feed import SnapshotFeed
from fleetdeck.tui.footer import FleetFooter
from fleetdeck.tui.header import FleetHeader
from fleetdeck.tui.help import HelpScreen
from fleetdeck.tui.inflight import InFlightTable
from fleetdeck.tui.load import LoadPane
from fleetdeck.tui.palette import PALETTE, OperatorCommands
from fleetdeck.tui.queue import QueuePane, QueueTable
from fleetdeck.tui.timeline import TimelineScreen
from fleetdeck.tui.vtable import VirtualTable
from fleetdeck.tui.whatif import WhatIfLine

# Screen refreshes per second at most: output floods and event bursts are
# batched into these, never one repaint per line or per event.
REFRESH_SECONDS = 0.25
# At least this often even when nothing happened, so that clocks tick.
IDLE_REFRESH_SECONDS = 1.0
# Wider than this, the screen uses its room (the `-wide` class).
WIDE = 140
# Narrower than this, no room beside the queue (the `-narrow` class).
NARROW = 80
# The screen rings (bell, OSC 9) at most this often.
RING_SECONDS = 5.0
# How often to ask whether a full garbage collection is due (see collector.py).
COLLECT_CHECK_SECONDS = 1.0


class FleetApp(App[int]):
    """fleetdeck's terminal UI for one engine."""

    CSS_PATH = "app.tcss"
    TITLE = "fleetdeck"
    ENABLE_COMMAND_PALETTE = True
    # Only the operator's commands: none of Textual's own (theme, screenshot...).
    COMMANDS = {OperatorCommands}
    BINDINGS = [
        Binding("s", "switch_policy", "Policy"),
        Binding("c", "cancel", "Cancel"),
        Binding("r", "retry", "Retry"),
        Binding("x", "acknowledge", "Seen"),
        Binding("p", "pause", "Pause"),
        Binding("enter", "details", "Details"),
        Binding("t", "timeline", "Timeline"),
        Binding("a", "all_tasks", "All"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        # As `q`, rather than Textual's "press ctrl+q" toast; even in the filter box.
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("escape", "go_back", "Back", show=False),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        # Attached to a fleet in the background (fleetdeck attach): d leaves it
        # running, as q does there; Q stops the fleet itself, once confirmed.
        Binding("d", "detach", "Detach", show=False),
        Binding("Q", "stop_fleet", "Stop fleet", show=False),
    ]

    def get_driver_class(self) -> type[Driver]:
        """Textual's driver for this platform; on Linux, one that survives the
        terminal going away (see fleetdeck.tui.driver)."""
        driver = super().get_driver_class()
        return TerminalSafeDriver if driver is LinuxDriver else driver

    def __init__(
        self,
        client: EngineClient,
        lifecycle: RunHandle,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        attached: bool = False,
    ) -> None:
        """A view of the run `lifecycle` holds, through `client`. `attached`: the
        run is a supervisor's in the background (fleetdeck attach): q and ctrl+c
        detach, and the fleet goes on."""
        super().__init__()
        self.attached = attached
        self._rang = -RING_SECONDS
        self.rings = 0  # how often it rang (tests)
        self.client = client
        self.lifecycle = lifecycle
        self.feed = SnapshotFeed(client)
        self.refresh_seconds = refresh_seconds
        self._dirty = True
        self._since_refresh = 0.0
        self._quitting = False
        self._asking_to_quit = False
        self.collector = IdleCollector()

    # --- layout -------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # In flight across the whole width (its rows carry the latest output line),
        # the queue below on the left (it needs height), contention and load beside.
        yield FleetHeader(id="header")
        yield InFlightTable(id="inflight")
        with Horizontal(id="body"):
            yield QueuePane(id="queue")
            with Vertical(id="side"):
                yield ContentionPane(id="contention")
                yield WhatIfLine(self.client, id="whatif")
                yield LoadPane(id="load")
        yield FleetFooter()

    async def on_mount(self) -> None:
        self.client.subscribe(self._on_event)
        # Until every task has ended (or a stop), exactly as headless.
        self.lifecycle.start(
            on_finish=self._run_finished, on_stop_signal=self._stop_requested_from_outside
        )
        self.set_interval(self.refresh_seconds, self._tick)
        self.query_one(QueueTable).focus()
        self.refresh_view()
        waiting = len(self.client.snapshot().attention)
        if self.attached and waiting:
            # Attached after something went wrong, and it still needs the operator.
            self.ring(f"fleetdeck: {waiting} item(s) need you")
        # Most of what this process holds lives as long as the run: the fleet's
        # definition, the engine's state and a view per task. Python's full
        # collections walked all of it every few seconds under a flood of output
        # (80-120 ms at 10,000 tasks, and a key pressed meanwhile waited); frozen,
        # they walk only what came later. Refcounting still frees what is dropped.
        gc.collect()
        gc.freeze()
        # The full collections of what came later, when no key is waiting.
        self.collector.start()
        self.set_interval(COLLECT_CHECK_SECONDS, self.collector.tick)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent):
            self.collector.input_seen()  # no full collection for a moment
            if isinstance(event, events.Key):
                # Answered by then, and the next key is rarely that close.
                self.set_timer(QUIET, self.collector.tick)
        await super().on_event(event)

    def on_resize(self) -> None:
        self.set_class(self.size.width >= WIDE, "-wide")
        self.set_class(self.size.width < NARROW, "-narrow")
        self._dirty = True

    # --- refreshing -----------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        # Only note that something changed: the timer repaints, whatever the rate.
        self._dirty = True
        alert = alert_of(event)
        if alert is not None:  # in-process or attached: what needs the operator rings
            self.ring(f"fleetdeck: {summary({alert.kind: [alert.name]})}")
        if event.kind is EventKind.POLICY_CHANGED:
            self.notify(f"policy: {event.data['policy']} (from the next launch)", timeout=3)

    def ring(self, message: str) -> None:
        """Tell the operator away from this screen (in-process or attached): the
        bell, and a desktop notification (OSC 9, which terminals forward over SSH); once in
        `RING_SECONDS`, so a burst of failures rings once."""
        now = time.monotonic()
        if now - self._rang < RING_SECONDS:
            return
        self._rang = now
        self.rings += 1
        self.bell()
        driver = self._driver
        if driver is not None and not self.is_headless:
            clean = "".join(c for c in message if c.isprintable())
            driver.write(f"\x1b]9;{clean}\x07")

    def _tick(self) -> None:
        self._since_refresh += self.refresh_seconds
        if self._dirty or self._since_refresh >= IDLE_REFRESH_SECONDS:
            self.refresh_view()

    def refresh_view(self) -> None:
        """Repaint every pane from one snapshot of the engine (what changed, for tasks)."""
        self._dirty = False
        self._since_refresh = 0.0
        if not self.screen_stack:
            return
        main = self.screen_stack[0]  # the panes live there, whatever screen is on top
        try:
            header = main.query_one(FleetHeader)
        except NoMatches:
            return  # the app is closing and its widgets are gone
        refresh = self.feed.poll()
        snapshot = refresh.snapshot
        header.show(snapshot, width=self.size.width)
        main.query_one(QueuePane).show(refresh)
        main.query_one(InFlightTable).show(
            snapshot, task_width=refresh.longest_id, logs=self.client
        )
        side = main.query_one("#side")
        main.query_one(ContentionPane).show(snapshot, width=side.size.width)
        main.query_one(WhatIfLine).show(snapshot)
        load = main.query_one(LoadPane)
        # size is the content area (inside border and padding).
        load.show(snapshot, width=load.size.width, lines=max(2, load.size.height))

    # --- the selected task ----------------------------------------------------------

    def selected_task(self) -> str | None:
        """The task the keys act on: the detail screen's, or the focused table's row."""
        if isinstance(self.screen, TaskDetailScreen):
            return self.screen.task_id
        if isinstance(self.screen, TimelineScreen):
            return self.screen.selected_task  # the bar selected with the arrows
        focused = self.focused
        if isinstance(focused, InFlightTable):
            return focused.selected_task
        return self.query_one(QueueTable).selected_task

    def _selected_or_tell(self) -> str | None:
        task = self.selected_task()
        if task is None:
            self.notify("Select a task first (arrows or j/k).", severity="warning", timeout=3)
        return task

    @property
    def finished(self) -> bool:
        """Whether the engine's run has ended (the screen is left for browsing)."""
        return self.lifecycle.finished

    @property
    def result(self) -> RunOutcome | None:
        """How the run ended, once it has."""
        return self.lifecycle.result

    def _finished_tell(self, why_not: str) -> bool:
        """Whether the run has ended, saying so (`why_not`: what can no longer be done)."""
        if self.finished:
            self.notify(
                f"The run has finished: {why_not}. q quits.",
                severity="warning",
                timeout=4,
            )
        return self.finished

    def _command(self, what: str, action: object) -> None:
        if self._finished_tell(f"no {what} any more"):
            return
        try:
            action()  # type: ignore[operator]
        except CommandError as exc:
            self.notify(str(exc), title=what, severity="error", timeout=5)
        self.refresh_view()

    # --- actions --------------------------------------------------------------------

    def action_switch_policy(self) -> None:
        """s: the next policy in the registry, for the next launch decision."""
        if self._finished_tell("nothing is launched any more"):
            return
        policy = self.client.snapshot().policy
        self._command("policy", lambda: self.client.set_policy(next_policy(policy)))

    def action_cancel(self) -> None:
        """c: cancel the selected task, once confirmed."""
        if self._finished_tell("nothing is left to cancel"):
            return
        task = self._selected_or_tell()
        if task is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._command("cancel", lambda: self.client.cancel(task))
                self.notify(f"cancelling {task}", timeout=3)

        self.push_screen(
            ConfirmScreen(
                f"Cancel [b]{task}[/b]?\nIts attempt and every process it started will be "
                "stopped, and the tasks that depend on it will be blocked."
            ),
            answered,
        )

    def action_retry(self) -> None:
        """r: run a failed, cancelled or blocked-root task again."""
        if self._finished_tell("no task can be retried"):
            return
        task = self._selected_or_tell()
        if task is None:
            return
        try:
            ci_alone = Stage.CI in self.client.retry_stages(task)
        except CommandError as exc:
            self.notify(str(exc), title="retry", severity="error", timeout=5)
            return
        if not ci_alone:
            self._command("retry", lambda: self.client.retry(task))
            return

        def answered(key: str | None) -> None:
            if key is not None:
                stage = Stage.CI if key == "c" else Stage.AGENT
                self._command("retry", lambda: self.client.retry(task, stage))

        self.push_screen(
            ChoiceScreen(
                f"[b]{task}[/b] failed in CI. Rerun CI only, on its agent's work as it "
                "is (c), or the agent and CI (a)?",
                [("c", "CI only"), ("a", "agent and CI")],
            ),
            answered,
        )

    def action_acknowledge(self) -> None:
        """x: the selected failed task or blocked root is seen: it leaves the attention queue."""
        if self._finished_tell("nothing needs acknowledging any more"):
            return
        task = self._selected_or_tell()
        if task is not None:
            self._command("acknowledge", lambda: self.client.acknowledge(task))

    def action_pause(self) -> None:
        """p: hold back new launches, or let them go again."""
        if self._finished_tell("nothing is launched any more"):
            return
        if self.client.snapshot().paused:
            self.client.resume()
        else:
            self.client.pause()
        # The header says so at once. The rest of the screen (what is launched, or
        # not) follows with the next timed refresh, rather than making the key
        # wait for every pane to be redrawn.
        self.query_one(FleetHeader).show(self.client.snapshot(), width=self.size.width)

    def action_details(self) -> None:
        """enter: the selected task's attempts, log, inputs and output."""
        task = self._selected_or_tell()
        if task is not None and not isinstance(self.screen, TaskDetailScreen):
            self.push_screen(TaskDetailScreen(self.client, task))

    @on(VirtualTable.RowSelected, "#queue-table, #inflight")
    def _row_chosen(self) -> None:
        # Enter on a table row (or a click on a selected row) opens its details.
        self.action_details()

    def action_timeline(self) -> None:
        """t: the Gantt of attempts per slot."""
        if not isinstance(self.screen, TimelineScreen):
            self.push_screen(TimelineScreen(self.client))

    def action_all_tasks(self) -> None:
        """a: show the tasks that are done too (a group at the end), or hide them."""
        pane = self.query_one(QueuePane)
        pane.set_show_done(not pane.show_done)

    def action_filter(self) -> None:
        """/: type to filter the queue."""
        pane = self.query_one(QueuePane)
        pane.add_class("-filtering")
        self.query_one("#queue-filter", Input).focus()

    @on(Input.Submitted, "#queue-filter")
    def _filter_done(self) -> None:
        self.query_one(QueueTable).focus()

    def action_go_back(self) -> None:
        """esc: leave a screen, or clear the filter."""
        if len(self.screen_stack) > 1:
            self.pop_screen()
            return
        pane = self.query_one(QueuePane)
        if pane.has_class("-filtering") or pane.filter_text:
            self.query_one("#queue-filter", Input).value = ""  # the pane follows its box
            pane.remove_class("-filtering")
            self.query_one(QueueTable).focus()

    def action_help(self) -> None:
        """?: keys and the load formula."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_cursor_down(self) -> None:
        """j: like the down arrow."""
        if isinstance(self.focused, DataTable | VirtualTable):
            self.focused.action_cursor_down()

    def action_cursor_up(self) -> None:
        """k: like the up arrow."""
        if isinstance(self.focused, DataTable | VirtualTable):
            self.focused.action_cursor_up()

    async def action_quit(self) -> None:
        """q (or ctrl+c): stop cleanly and leave; asks first while work is in flight.
        Attached: leave at once, the fleet goes on (Q stops it)."""
        if self.attached:
            self.action_detach()
            return
        in_flight = self.client.snapshot().in_flight
        if in_flight == 0 or self.finished:
            await self._stop_and_exit()
            return
        if self._asking_to_quit:
            return  # a second ctrl+c while the question is up: one question

        async def answered(yes: bool | None) -> None:
            self._asking_to_quit = False
            if yes:
                await self._stop_and_exit()

        self._asking_to_quit = True
        self.push_screen(
            ConfirmScreen(
                f"Quit? [b]{in_flight}[/b] task(s) in flight will be stopped "
                "(their whole process trees); the journal keeps everything."
            ),
            answered,
        )

    def action_detach(self) -> None:
        """d: leave the screen, the fleet goes on (attached only)."""
        if not self.attached:
            self.notify(
                "This run lives in this terminal: `fleetdeck start` runs a fleet you "
                "can detach from.",
                severity="warning",
                timeout=4,
            )
            return
        self.exit(0)

    def action_stop_fleet(self) -> None:
        """Q: stop the fleet itself (attached), once confirmed; the screen stays to its end."""
        if not self.attached:
            self.run_worker(self.action_quit())
            return
        if self._finished_tell("nothing is left to stop"):
            return
        in_flight = self.client.snapshot().in_flight

        def answered(yes: bool | None) -> None:
            if yes:
                self._command("stop", lambda: self.client.request_stop())
                self.notify("stopping the fleet (for every screen attached)", timeout=3)

        self.push_screen(
            ConfirmScreen(
                f"Stop the fleet? [b]{in_flight}[/b] task(s) in flight will be stopped "
                "for everyone attached; `fleetdeck start` resumes it."
            ),
            answered,
        )

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Every action in the command palette (ctrl+p), by name (see fleetdeck.tui.palette)."""
        for title, help_text, action in PALETTE:
            yield SystemCommand(title, help_text, getattr(self, f"action_{action}"))

    # --- stopping -------------------------------------------------------------------

    async def _stop_and_exit(self) -> None:
        if self.finished:
            # Nothing left to stop (it may have ended while the question was up):
            # leave at once, with the run's exit code.
            self.exit(self.result.exit_code if self.result is not None else 1)
            return
        if self._quitting:
            return
        self._quitting = True
        self.client.request_stop()
        self.refresh_view()
        # The app leaves when the run has ended (_run_finished).

    def _stop_requested_from_outside(self) -> None:
        # The lifecycle has asked the run to stop; no one may be there to answer a
        # question: leave once it has ended, or now if it already has.
        if self.attached:
            self.exit(0)  # this terminal went away: the fleet goes on
            return
        self._quitting = True
        if self.result is not None:
            self.exit(self.result.exit_code)

    def _run_finished(self) -> None:
        failure = self.lifecycle.failure
        if self.result is None:
            message = None if failure is None else f"fleetdeck: the engine stopped: {failure!r}"
            if failure is not None and self.attached:
                message = f"fleetdeck: {failure}"  # the supervisor went away
            self.exit(1, message=message)
            return
        if self._quitting:
            self.exit(self.result.exit_code)
            return
        # Every task has ended: the run is journaled as finished; the screen stays.
        self.refresh_view()
        # Short and brief: at 80x24 it covers the load pane, and the header says it too.
        self.notify(f"Run finished (exit {self.result.exit_code}); q quits.", timeout=3)

    async def on_unmount(self) -> None:
        self.collector.stop()
        gc.unfreeze()
        # However the app ends (a test's exit, a crash), leave no process behind:
        # the run's, and the client's (its what-if predictions).
        self.client.close()
        await self.lifecycle.close()


def run_tui(client: EngineClient, lifecycle: RunHandle, *, attached: bool = False) -> int:
    """Run the TUI over `client` and the run `lifecycle` holds until the operator
    quits (or, `attached`, detaches); returns the exit code."""
    app = FleetApp(client, lifecycle, attached=attached)
    code = app.run()
    if app.result is not None:
        return app.result.exit_code
    return code if isinstance(code, int) else 1
