"""What views see of a run: snapshots, a task's detail, the timeline.

Built from the core's task table and the shell's measurements (hosts, resource
use, contention history) as plain, immutable data (fleetdeck.snapshot), so that
a view in this process or at the other end of a socket reads the same thing.
The engine decides nothing here; this module only looks.

Each task's view is kept from one snapshot to the next until something in it
changes (the core marks the task dirty): a refresh at 10,000 tasks rebuilds
the few that changed, and views can tell what changed by identity.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from fleetdeck.engine.changes import Overlap, TaskChanges
from fleetdeck.engine.core import Core
from fleetdeck.engine.limits import agent_limits
from fleetdeck.metrics import ContentionHistory, cognitive_load, mean, percentile
from fleetdeck.model import LOCAL_HOST, Attempt, HostState, Stage, TaskState
from fleetdeck.redact import Redactor
from fleetdeck.stages import STAGES, workers

if TYPE_CHECKING:
    from fleetdeck.executors.base import HostHealth, Usage
    from fleetdeck.snapshot import AttemptRecord, FleetSnapshot, TaskDetail, TaskView, Timeline

# How much of an input or output the detail screen gets.
DETAIL_TEXT_LIMIT = 4096
# A task's change is known, and may overlap another's, once its agent stage is
# behind it and until it has landed (or ended).
_CHANGED_STATES = frozenset(
    {TaskState.CI_QUEUED, TaskState.CI_RUNNING, TaskState.MERGE_QUEUED, TaskState.MERGING}
)


class ViewBuilder:
    """Builds the views of one run from its core."""

    def __init__(
        self,
        core: Core,
        *,
        redactor: Redactor,
        hosts: Mapping[str, HostHealth],
        history: ContentionHistory,
        usage: Callable[[], Mapping[int, Usage]],
    ) -> None:
        self.core = core
        self.redactor = redactor
        self._hosts = hosts
        self._history = history
        self._usage = usage
        self._views: list[TaskView] | None = None
        # What each task's agent committed (the shell records it), and which of
        # those changes in flight overlap, since when.
        self.changes = TaskChanges()
        self._overlaps: dict[int, Overlap] = {}
        self._overlap_since: dict[int, float] = {}

    def snapshot(
        self,
        *,
        now: float,
        started_at: float | None,
        finished_at: float | None,
        exit_code: int | None,
        stopping: bool,
    ) -> FleetSnapshot:
        """A consistent, immutable picture of the run (`finished_at`: the end of a
        run that has ended; its clocks stop there)."""
        from fleetdeck.snapshot import AttemptView, AttentionItem, FleetSnapshot, HostView, PoolView

        core = self.core
        at = now if finished_at is None else finished_at
        attention: list[AttentionItem] = []
        in_flight_states: list[TaskState] = []
        done = 0
        self._update_overlaps(at)
        views = self._fresh_views()
        for node, task in enumerate(core.tasks):
            state = task.state
            if state is TaskState.SUCCEEDED:
                done += 1
            if task.in_flight:
                in_flight_states.append(state)
            if task.attention_since is not None and core.needs_attention(node):
                attention.append(
                    AttentionItem(
                        task=task.id,
                        state=state,
                        since=task.attention_since,
                        reason=task.waiting_for,
                    )
                )
        for node, overlap in self._overlaps.items():
            task = core.tasks[node]
            attention.append(
                AttentionItem(
                    task=task.id,
                    state=task.state,
                    since=self._overlap_since[node],
                    overlaps=tuple(core.tasks[other].id for other in overlap.others),
                    files=overlap.files,
                )
            )
        for agent, (since, reason) in core.limits.attention.items():
            # An agent over its budget: the item is the agent's, not a task's.
            attention.append(
                AttentionItem(
                    task="", state=TaskState.BLOCKED, since=since, reason=reason, agent=agent
                )
            )
        attention.sort(key=lambda item: item.since)
        resources = self._usage()
        running = tuple(
            AttemptView(
                attempt_id=r.attempt.attempt_id,
                task=r.attempt.task,
                stage=r.attempt.stage,
                number=r.attempt.number,
                worker=r.attempt.worker,
                host=r.attempt.host,
                pid=r.attempt.pid,
                started_at=at if r.attempt.started_at is None else r.attempt.started_at,
                log_path=r.attempt.log_path,
                stopping=r.stop_reason is not None,
                cpu_percent=u.cpu_percent if (u := resources.get(r.attempt.attempt_id)) else None,
                rss_bytes=u.rss_bytes if u else None,
            )
            for r in core.running.values()
        )
        config = core.fleet.config
        held = core.held_by_policy
        pools = [
            PoolView(
                stage=Stage.AGENT,
                name=name,
                busy=(usage := core.capacity.usage(Stage.AGENT, name)).busy,
                total=usage.total,
                # Ready tasks the policy holds back do not wait for a slot.
                waiting=0 if held and usage.busy < usage.total else core.ready.waiting(name),
                history=self._history.of((Stage.AGENT, name)),
                **agent_limits(core.limits, name),
            )
            for name in config.agents
        ]
        for (stage, name), queue in core.stage_queues.items():
            usage = core.capacity.usage(stage, name)
            waits = core.queue_waits.get(name, [])
            pools.append(
                PoolView(
                    stage=stage,
                    name=name,
                    busy=usage.busy,
                    total=usage.total,
                    waiting=len(queue),
                    wait_mean=mean(waits),
                    wait_p95=percentile(waits, 0.95),
                    history=self._history.of((stage, name)),
                    oldest_wait=self._oldest_wait(queue, at),
                )
            )
        hosts = tuple(
            HostView(
                name=name,
                state=health.state if (health := self._hosts.get(name)) else HostState.DOWN,
                running=core.capacity.sessions(name),
                latency=health.latency if health else None,
                load=health.load if health else None,
                reason=self.redactor.text(health.reason) if health and health.reason else None,
            )
            for name in (LOCAL_HOST, *config.hosts)
        )
        return FleetSnapshot(
            fleet=core.fleet.name,
            policy=core.policy.name,
            paused=core.paused,
            stopping=stopping,
            now=at,
            started_at=started_at,
            tasks=views,
            running=running,
            pools=tuple(pools),
            hosts=hosts,
            load=cognitive_load(in_flight_states, len(attention), config.fleet.load_capacity),
            attention=tuple(attention),
            done=done,
            total=len(core.tasks),
            held_by_policy=held,
            finished_at=finished_at,
            exit_code=exit_code,
            policy_detail=core.policy.describe(),
        )

    def _update_overlaps(self, at: float) -> None:
        """Find the changes in flight that overlap now; the tasks whose overlaps
        changed get their views rebuilt."""
        tasks = self.core.tasks
        overlaps = self.changes.overlaps(
            node for node in self.changes.by_node if tasks[node].state in _CHANGED_STATES
        )
        if overlaps == self._overlaps:
            return
        dirty = self.core.dirty
        for node in overlaps.keys() | self._overlaps.keys():
            if overlaps.get(node) != self._overlaps.get(node) and dirty is not None:
                dirty.add(node)
        self._overlap_since = {node: self._overlap_since.get(node, at) for node in overlaps}
        self._overlaps = overlaps

    def _oldest_wait(self, queue: deque[int], at: float) -> float | None:
        """How long the task at the head of a stage's queue has waited."""
        if not queue:
            return None
        since = self.core.queued_since.get(queue[0])
        return None if since is None else at - since

    def _fresh_views(self) -> tuple[TaskView, ...]:
        """Every task's view, rebuilding only those that changed since the last call."""
        # Imported once here, not per view: the first snapshot builds every task's view.
        from fleetdeck.snapshot import TaskView

        core = self.core
        if self._views is None or core.dirty is None:
            self._views = [self._task_view(node, TaskView) for node in range(len(core.tasks))]
            core.dirty = set()
        else:
            views = self._views
            for node in core.dirty:
                views[node] = self._task_view(node, TaskView)
            core.dirty.clear()
        return tuple(self._views)

    def _task_view(self, node: int, view: type[TaskView]) -> TaskView:
        """Task `node`'s view, built with `view` (TaskView, imported by the caller)."""
        core = self.core
        task = core.tasks[node]
        spec = core.specs[node]
        return view(
            id=task.id,
            state=task.state,
            wave=core.dag.levels[node],
            agent=core.agent_of[node],
            runner=spec.ci,
            attempts=task.agent_attempts,
            waiting_for=tuple(
                core.tasks[dep].id
                for dep in core.dag.deps[node]
                if core.tasks[dep].state is not TaskState.SUCCEEDED
            ),
            blocked_by=task.blocked_by,
            in_flight=task.in_flight,
            started_at=task.first_started_at,
            finished_at=task.finished_at,
            retry_at=task.retry_at,
            overlaps=tuple(core.tasks[other].id for other in overlap.others)
            if (overlap := self._overlaps.get(node)) is not None
            else (),
        )

    def task_detail(self, task_id: str) -> TaskDetail:
        """One task's attempts, inputs and output, for the detail screen."""
        from fleetdeck.snapshot import AttemptRecord, TaskDetail, TaskView

        core = self.core
        node = core.node(task_id)
        task = core.tasks[node]
        redact = self.redactor.text
        deps = core.dag.deps[node]
        return TaskDetail(
            task=self._task_view(node, TaskView),
            prompt=redact(core.specs[node].prompt),
            depends_on=tuple(core.tasks[dep].id for dep in deps),
            dependents=tuple(core.tasks[child].id for child in core.dag.dependents[node]),
            attempts=tuple(
                _record(attempt, self.redactor, AttemptRecord) for attempt in task.attempts
            ),
            inputs={
                core.tasks[dep].id: redact(
                    read_output(core.tasks[dep].output_path, DETAIL_TEXT_LIMIT)
                )
                for dep in deps
            },
            output=redact(read_output(task.output_path, DETAIL_TEXT_LIMIT))
            if task.output_path
            else None,
            change=self.changes.by_node.get(node),
            usage=core.limits.task_usage.get(node),
        )

    def timeline(self, *, now: float, started_at: float | None) -> Timeline:
        """Every attempt so far and the slots they ran in, for the timeline screen."""
        from fleetdeck.snapshot import AttemptRecord, Lane, Timeline

        config = self.core.fleet.config
        lanes: list[Lane] = []
        for stage in STAGES:
            for name, spec in workers(config, stage).items():
                for host in spec.host_names:
                    lanes.extend(Lane(stage, name, host, slot) for slot in range(1, spec.slots + 1))
        attempts = tuple(
            _record(attempt, self.redactor, AttemptRecord)
            for task in self.core.tasks
            for attempt in task.attempts
        )
        return Timeline(started_at=started_at, now=now, lanes=tuple(lanes), attempts=attempts)


def _record(attempt: Attempt, redactor: Redactor, record: type[AttemptRecord]) -> AttemptRecord:
    """A frozen copy of the engine's live attempt (its error with secrets masked),
    built with `record` (AttemptRecord, imported by the caller)."""
    return record(
        attempt_id=attempt.attempt_id,
        task=attempt.task,
        stage=attempt.stage,
        number=attempt.number,
        worker=attempt.worker,
        host=attempt.host,
        queued_at=attempt.queued_at,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        outcome=attempt.outcome,
        exit_code=attempt.exit_code,
        error=None if attempt.error is None else redactor.text(attempt.error),
        log_path=attempt.log_path,
        output_path=attempt.output_path,
    )


def read_output(path: str | None, limit: int | None = None) -> str:
    """An output file as text ("" when there is none), cut to `limit` bytes."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as handle:
            data = handle.read() if limit is None else handle.read(limit + 1)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if limit is not None and len(data) > limit:
        text = text[:limit] + "\n[...]"
    return text
