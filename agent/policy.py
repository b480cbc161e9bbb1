"""The device owner's local policy: per action ``allowed``, ``needs_consent`` or ``forbidden``,
plus maintenance windows for disruptive actions.

Precedence: ``forbidden_actions`` > ``consent_actions`` > ``allowed_actions`` > not listed
(forbidden). Entries are exact names or glob patterns (``printer.*``). In the allowed and
consent lists a pattern never matches a *disruptive* action (``ActionSpec.disruptive``): those
must be listed by their exact name, so allowing "all printer diagnostics" cannot silently allow
"reboot the printer". In the forbidden list patterns match everything (forbidding is safe).

Control actions (``protocol.CONTROL_ACTIONS``: asking for consent, cancelling a command) are
always allowed and never need consent: they cannot change the equipment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from fnmatch import fnmatchcase

from agent.config import MaintenanceWindow, PolicySettings
from agent.plugin import ActionSpec
from protocol import CONTROL_ACTIONS, PolicyDecision

__all__ = ["ActionPolicy", "NameList"]

_GLOB_CHARS = frozenset("*?[")


class NameList:
    """Exact names and glob patterns of one policy list."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = list(entries)
        self.exact = frozenset(e for e in entries if not _GLOB_CHARS & set(e))
        self.patterns = tuple(e for e in entries if _GLOB_CHARS & set(e))

    def matches(self, spec: ActionSpec, *, patterns_for_disruptive: bool) -> bool:
        if spec.name in self.exact:
            return True
        if spec.disruptive and not patterns_for_disruptive:
            return False
        return any(fnmatchcase(spec.name, pattern) for pattern in self.patterns)

    def matches_name(self, name: str) -> bool:
        return name in self.exact or any(fnmatchcase(name, p) for p in self.patterns)


class ActionPolicy:
    def __init__(
        self,
        allowed: Iterable[str],
        *,
        consent: Iterable[str] = (),
        forbidden: Iterable[str] = (),
        windows: Sequence[MaintenanceWindow] = (),
        attended: bool = False,
    ) -> None:
        self.allowed = NameList(allowed)
        self.consent = NameList(consent)
        self.forbidden = NameList(forbidden)
        self.windows = tuple(windows)
        self.attended = attended

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> ActionPolicy:
        return cls(
            settings.allowed_actions,
            consent=settings.consent_actions,
            forbidden=settings.forbidden_actions,
            windows=settings.windows,
            attended=settings.attended,
        )

    @property
    def exact(self) -> frozenset[str]:
        """Every action named exactly in the allowed or consent lists (to warn about typos)."""
        return self.allowed.exact | self.consent.exact

    def decide(self, spec: ActionSpec) -> PolicyDecision:
        """What the owner's lists say about ``spec`` (attended mode and windows aside)."""
        if spec.name in CONTROL_ACTIONS:
            return PolicyDecision.ALLOWED
        if self.forbidden.matches(spec, patterns_for_disruptive=True):
            return PolicyDecision.FORBIDDEN
        if self.consent.matches(spec, patterns_for_disruptive=False):
            return PolicyDecision.NEEDS_CONSENT
        if self.allowed.matches(spec, patterns_for_disruptive=False):
            return PolicyDecision.ALLOWED
        return PolicyDecision.FORBIDDEN

    def allows(self, spec: ActionSpec) -> bool:
        """Whether ``spec`` may run at all (possibly only with consent)."""
        return self.decide(spec) is not PolicyDecision.FORBIDDEN

    def allows_name(self, name: str) -> bool:
        """For an action this device does not have: would the policy allow the name at all?"""
        if name in CONTROL_ACTIONS:
            return True
        if self.forbidden.matches_name(name):
            return False
        return self.allowed.matches_name(name) or self.consent.matches_name(name)

    def windows_for(self, spec: ActionSpec) -> list[MaintenanceWindow]:
        """The windows that bound ``spec``: all of them for a disruptive action, else none."""
        return list(self.windows) if spec.disruptive and spec.name not in CONTROL_ACTIONS else []

    def in_window(self, spec: ActionSpec, now: datetime) -> bool:
        """Whether ``spec`` may run at ``now``: a disruptive action inside a window when any
        is configured; everything else at any time."""
        windows = self.windows_for(spec)
        return not windows or any(w.contains(now) for w in windows)

    def needs_consent(self, spec: ActionSpec, *, session_all_commands: bool = False) -> bool:
        """Whether a local operator's approval of the command's session is required."""
        if spec.name in CONTROL_ACTIONS:
            return False
        return self.attended or session_all_commands or self.decide(spec) is PolicyDecision.NEEDS_CONSENT
