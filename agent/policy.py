"""The device owner's allow-list for actions (``policy.allowed_actions``).

Entries are exact names or glob patterns (``printer.*``). A pattern never enables a
*disruptive* action (``ActionSpec.disruptive``): those must be listed by their exact name, so
allowing "all printer diagnostics" cannot silently allow "reboot the printer".
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from agent.plugin import ActionSpec

__all__ = ["ActionPolicy"]

_GLOB_CHARS = frozenset("*?[")


class ActionPolicy:
    def __init__(self, allowed: Iterable[str]) -> None:
        entries = list(allowed)
        self.exact = frozenset(e for e in entries if not _GLOB_CHARS & set(e))
        self.patterns = tuple(e for e in entries if _GLOB_CHARS & set(e))

    def allows(self, spec: ActionSpec) -> bool:
        if spec.name in self.exact:
            return True
        if spec.disruptive:
            return False
        return any(fnmatchcase(spec.name, pattern) for pattern in self.patterns)

    def allows_name(self, name: str) -> bool:
        """For an action this device does not have: would the policy allow the name at all?"""
        return name in self.exact or any(fnmatchcase(name, p) for p in self.patterns)
