"""Secrets: the values of the variables `[fleet] secrets` names, masked as `***`.

Whatever fleetdeck records or shows passes through one `Redactor`: event details
(so the journal, headless lines and `--json`), attempt errors, the config kept in
the journal, and what views read (snapshots, task details, log tails). The values
come from the workers' `env` in the config and from the supervisor's own
environment, since either may feed an attempt.

A value shorter than `MIN_LENGTH` characters is not masked: masking `1` or `yes`
everywhere would garble every number and word of the output while hiding
nothing worth hiding; `fleetdeck run` warns about such a secret instead.
Identifiers (task ids, agent, runner and host names, states) are never masked:
they are the user's own words from the config, and reports are rebuilt from them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetdeck.config import Fleet

MASK = "***"
MIN_LENGTH = 4

# Keys of the stored config whose values are identifiers, kept as they are so a
# report can still be rebuilt from the config (`fleetdeck report`).
_IDENTIFIER_KEYS = frozenset({"id", "agent", "ci", "depends_on", "host", "hosts", "policy"})


class Redactor:
    """Replaces every occurrence of any secret value in text with `***`.

    One compiled alternation of the escaped values, longest first, so that a
    value containing another is masked whole. With no secrets, every method
    returns its argument untouched at the cost of one truth test.
    """

    __slots__ = ("_pattern", "longest", "too_short")

    def __init__(self, values: Iterable[str] = (), *, too_short: Iterable[str] = ()) -> None:
        """`values` are secret values; `too_short` names secrets left unmasked."""
        kept: set[str] = set()
        for value in values:
            # A value read from a file often carries a newline it is printed without.
            for form in (value, value.strip()):
                if len(form) >= MIN_LENGTH:
                    kept.add(form)
        ordered = sorted(kept, key=lambda value: (-len(value), value))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self.longest = len(ordered[0]) if ordered else 0
        self.too_short: tuple[str, ...] = tuple(too_short)

    @classmethod
    def for_fleet(cls, fleet: Fleet, environ: Mapping[str, str] | None = None) -> Redactor:
        """The redactor of `fleet`: its secrets' values from the workers' `env`
        and from `environ` (the supervisor's environment by default)."""
        environ = os.environ if environ is None else environ
        config = fleet.config
        workers = [*config.agents.values(), *config.runners.values()]
        values: list[str] = []
        too_short: list[str] = []
        for name in fleet.secrets:
            found = [worker.env[name] for worker in workers if name in worker.env]
            if name in environ:
                found.append(environ[name])
            # An empty value is no secret; a short one is named in a warning.
            found = [value for value in found if value.strip()]
            if any(len(value.strip()) < MIN_LENGTH for value in found):
                too_short.append(name)
            values += found
        return cls(values, too_short=too_short)

    def __bool__(self) -> bool:
        """True when there is anything to mask."""
        return self._pattern is not None

    def text(self, text: str) -> str:
        """`text` with every secret value replaced by `***`."""
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """Strings, and strings inside lists, tuples and dict values, masked.

        Enum members (stages, outcomes, states) are the fixed vocabulary, never a
        secret, and keep their type; dict keys are names, kept as they are.
        """
        if self._pattern is None:
            return value
        if type(value) is str:  # not an enum member, which is a str too
            return self._pattern.sub(MASK, value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.value(item) for item in value)
        return value

    def details(self, data: dict[str, Any]) -> dict[str, Any]:
        """An event's details with secret values masked (the same dict when clean)."""
        if self._pattern is None:
            return data
        return {key: self.value(item) for key, item in data.items()}

    def config_json(self, text: str) -> str:
        """A config as JSON (as the journal keeps it) with secret values masked,
        identifiers excepted."""
        if self._pattern is None:
            return text
        return json.dumps(self._config(json.loads(text)), separators=(",", ":"))

    def _config(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: item if key in _IDENTIFIER_KEYS else self._config(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self._config(item) for item in value]
        return self.text(value) if isinstance(value, str) else value


NO_SECRETS = Redactor()
