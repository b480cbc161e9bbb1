"""The actions a command may name on this device: built-ins plus every plugin's."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from agent.errors import ActionConflict, ActionError
from agent.plugin import ActionSpec

__all__ = ["ActionRegistry", "RegisteredAction"]

# Same rule as protocol.Command.action: an action that does not match could never be called.
_ACTION_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")


@dataclass(frozen=True, slots=True)
class RegisteredAction:
    spec: ActionSpec
    source: str  # "built-in" or "plugin <name>"

    @property
    def name(self) -> str:
        return self.spec.name


class ActionRegistry:
    def __init__(self) -> None:
        self._actions: dict[str, RegisteredAction] = {}

    def add(self, spec: ActionSpec, *, source: str) -> None:
        """Register ``spec``; :class:`ActionConflict` if the name is taken (checked at start)."""
        if len(spec.name) > 64 or not _ACTION_NAME.fullmatch(spec.name):
            raise ActionError(
                f"{source} offers action {spec.name!r}: names are dotted lower-case words "
                "([a-z0-9_], at most 64 characters)"
            )
        if spec.timeout <= 0:
            raise ActionError(f"{source} offers action {spec.name!r} with a non-positive timeout")
        existing = self._actions.get(spec.name)
        if existing is not None:
            raise ActionConflict(spec.name, existing.source, source)
        self._actions[spec.name] = RegisteredAction(spec, source)

    def add_all(self, specs: Iterable[ActionSpec], *, source: str) -> None:
        for spec in specs:
            self.add(spec, source=source)

    def get(self, name: str) -> RegisteredAction | None:
        return self._actions.get(name)

    def names(self) -> list[str]:
        return sorted(self._actions)

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def __iter__(self) -> Iterator[RegisteredAction]:
        return iter(self._actions.values())

    def __len__(self) -> int:
        return len(self._actions)
