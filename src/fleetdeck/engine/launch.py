"""What an executor is asked to run: an attempt's argv, environment and files.

Built by the shell for each attempt from the task's definition, its worker's
command template and its dependencies' outputs (read only if the executor asks).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping

from fleetdeck.config import Fleet, WorkerSpec
from fleetdeck.engine.core import Core, Running
from fleetdeck.engine.views import read_output
from fleetdeck.engine.workspace import Place
from fleetdeck.executors.base import LaunchRequest
from fleetdeck.model import LOCAL_HOST, Attempt, Stage
from fleetdeck.redact import Redactor
from fleetdeck.stages import workers


class RequestBuilder:
    """Turns a launched attempt into the executor's `LaunchRequest`."""

    def __init__(self, fleet: Fleet, core: Core, redactor: Redactor) -> None:
        self.fleet = fleet
        self.core = core
        # The names whose values a local attempt's shim masks in its log file (the
        # shim reads the values from its own environment, the attempt's).
        self._redact_names: tuple[str, ...] = fleet.secrets if redactor else ()
        self._workdirs: dict[int, str] = {}
        self._argv_templates: dict[int, tuple[tuple[str, bool], ...] | None] = {}

    def request_for(self, running: Running, place: Place | None = None) -> LaunchRequest:
        """The request that starts `running`'s attempt (in `place`, the task's
        workspace, when it has one)."""
        attempt = running.attempt
        core = self.core
        spec = core.specs[running.node]
        worker = workers(self.fleet.config, attempt.stage)[attempt.worker]
        if place is not None and place.cwd is not None:
            cwd: str | None = place.cwd
        elif attempt.host == LOCAL_HOST:
            cwd = self._local_workdir(worker)
        else:
            cwd = worker.workdir
        number = str(attempt.number)
        templates = self._templates(worker)
        if templates is None:
            argv = worker.command
        else:
            fields = {
                "task": spec.id,
                "prompt": spec.prompt,
                "attempt": number,
                "workdir": cwd or "",
                "python": sys.executable,
            }
            argv = tuple(
                arg.format_map(fields) if templated else arg for arg, templated in templates
            )
        env = {
            **worker.env,
            "FLEETDECK_TASK": spec.id,
            "FLEETDECK_ATTEMPT": number,
            "FLEETDECK_PROMPT": spec.prompt,
            "FLEETDECK_STAGE": attempt.stage,
        }
        if place is not None:
            env.update(place.env)
        task = core.tasks[running.node]
        if attempt.stage is not Stage.AGENT and task.output_path is not None:
            env["FLEETDECK_AGENT_OUTPUT"] = task.output_path
        tasks = core.tasks
        deps = core.dag.deps[running.node]
        inputs = DependencyOutputs(
            {tasks[dep].id: tasks[dep].output_attempt for dep in deps},
            # Failed optional dependencies: what is missing, and why.
            {tasks[dep].id: core.missing[dep] for dep in deps if dep in core.missing}
            if core.missing
            else None,
        )
        stem = attempt.stem
        return LaunchRequest(
            attempt_id=attempt.attempt_id,
            task=spec.id,
            stage=attempt.stage,
            number=attempt.number,
            argv=argv,
            env=env,
            cwd=cwd,
            log_path=stem + ".log",
            output_path=stem + ".out",
            inputs_path=stem + ".inputs.json",
            inputs=inputs,
            status_path=attempt.status_path,
            redact=self._redact_names,
            worker=attempt.worker,
        )

    def _templates(self, worker: WorkerSpec) -> tuple[tuple[str, bool], ...] | None:
        """Each argv element of `worker` and whether it has placeholders to fill;
        None when none has (the command is used as it is)."""
        key = id(worker)
        if key not in self._argv_templates:
            # `}}` alone is a literal brace too: anything with a brace is formatted.
            templates = tuple((arg, "{" in arg or "}" in arg) for arg in worker.command)
            self._argv_templates[key] = (
                templates if any(templated for _, templated in templates) else None
            )
        return self._argv_templates[key]

    def _local_workdir(self, worker: WorkerSpec) -> str:
        # Path.resolve() touches the disk; the answer does not change during a run.
        cwd = self._workdirs.get(id(worker))
        if cwd is None:
            cwd = self._workdirs[id(worker)] = str(self.fleet.workdir(worker))
        return cwd


class DependencyOutputs(Mapping[str, str]):
    """Each dependency's output, read from its file only when an executor asks.

    An executor that hands inputs to its attempts reads them all; one that does
    not (an in-process executor) costs no file access at all.
    """

    __slots__ = ("_attempts", "_missing")

    def __init__(
        self, attempts: dict[str, Attempt | None], missing: dict[str, str] | None = None
    ) -> None:
        # The successful attempt of each dependency (its output file's name is
        # built only if someone reads it), and what stands for a missing one.
        self._attempts = attempts
        self._missing = missing

    def __getitem__(self, task: str) -> str:
        if self._missing and task in self._missing:
            return self._missing[task]
        attempt = self._attempts[task]
        return "" if attempt is None else read_output(attempt.output_path)

    def __iter__(self) -> Iterator[str]:
        return iter(self._attempts)

    def __len__(self) -> int:
        return len(self._attempts)
