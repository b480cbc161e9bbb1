"""Exception tree of the agent package.

    AgentError
    ├── AgentConfigError        settings that cannot work: names the field(s) and the problem
    ├── DataDirInUse            another agent process holds the data directory's lock
    ├── OutboxError             the disk outbox cannot store a message
    │   └── MessageTooLarge     an encoded message exceeds protocol.MAX_PAYLOAD_BYTES
    ├── PluginError             an equipment plugin cannot be found, built or used
    │   └── PluginNotFound      no entry point of that name in ``fleetcare.equipment``
    ├── ActionError             the action registry or an action's own refusal
    │   ├── ActionConflict      two sources offer the same action name (raised at start)
    │   └── ActionArgumentError arguments a handler refuses (e.g. a log path outside policy)
    ├── ConsentError            a local operator's consent decision that cannot be recorded
    └── LinkError               the MQTT link failed; the link reconnects with backoff
        ├── LinkDown            no usable connection right now (publish could not complete)
        └── FatalLinkError      the broker or TLS refused *this identity*: retrying will not help

Commands refused by the guard do not raise: the guard returns a
:class:`agent.guard.Rejection` carrying a :class:`protocol.RejectReason`.
Third-party errors (aiomqtt, ssl, sqlite3, pydantic) are translated at the boundary and chained
(``raise ... from exc``), so callers only ever catch :class:`AgentError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ActionArgumentError",
    "ActionConflict",
    "ActionError",
    "AgentConfigError",
    "AgentError",
    "ConsentError",
    "DataDirInUse",
    "FatalLinkError",
    "InboxError",
    "LinkDown",
    "LinkError",
    "MessageTooLarge",
    "OutboxError",
    "PluginError",
    "PluginNotFound",
]


class AgentError(Exception):
    """Base of every error raised by :mod:`agent`."""


class AgentConfigError(AgentError):
    """Invalid settings. ``errors`` lists ``(field path, problem)`` pairs; ``source`` is the file."""

    def __init__(self, errors: Sequence[tuple[str, str]], *, source: Path | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source else ""
        lines = [f"{field or '<root>'}: {problem}" for field, problem in self.errors]
        if len(lines) == 1:
            text = f"{where}invalid agent configuration: {lines[0]}"
        else:
            text = f"{where}invalid agent configuration:\n  " + "\n  ".join(lines)
        super().__init__(text)

    @property
    def field(self) -> str:
        """The first offending field, e.g. ``broker.port``."""
        return self.errors[0][0] if self.errors else ""


class DataDirInUse(AgentError):
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        super().__init__(
            f"data directory {data_dir} is locked by another running agent "
            "(two agents must never share an outbox); stop it or use another data_dir"
        )


class OutboxError(AgentError):
    """The outbox database cannot be opened or written."""


class MessageTooLarge(OutboxError):
    def __init__(self, kind: str, size: int, limit: int) -> None:
        self.kind = kind
        self.size = size
        self.limit = limit
        super().__init__(f"{kind} message of {size} bytes exceeds the protocol limit of {limit} bytes")


class InboxError(AgentError):
    """The command inbox cannot be opened or written: a command that cannot be stored is not
    acknowledged to the broker (it is redelivered after a reconnect)."""


class PluginError(AgentError):
    def __init__(self, plugin: str, problem: str) -> None:
        self.plugin = plugin
        self.problem = problem
        super().__init__(f"equipment plugin {plugin!r}: {problem}")


class PluginNotFound(PluginError):
    def __init__(self, plugin: str, available: Sequence[str]) -> None:
        self.available = list(available)
        shown = ", ".join(sorted(self.available)) or "none installed"
        super().__init__(
            plugin,
            f"no entry point of that name in group 'fleetcare.equipment' (available: {shown}); "
            "install the package that provides it",
        )


class ActionError(AgentError):
    """An action-related failure."""


class ActionConflict(ActionError):
    def __init__(self, action: str, first: str, second: str) -> None:
        self.action = action
        self.first = first
        self.second = second
        super().__init__(f"action {action!r} is offered by both {first} and {second}; names must be unique")


class ActionArgumentError(ActionError):
    """A handler refuses its arguments; the technician sees the message in the error reply."""


class ConsentError(AgentError):
    """A consent decision that cannot be recorded (unknown session, a denial is final, the
    request expired, the consent database is unreadable); the message says what to do."""


class LinkError(AgentError):
    """The MQTT link failed. Retryable: the link reconnects with backoff."""


class LinkDown(LinkError):
    """No usable connection: the operation did not complete (the message stays in the outbox)."""


class FatalLinkError(LinkError):
    """The broker or the TLS layer refused this device's identity (bad, revoked or expired
    certificate, untrusted broker certificate, CONNACK not authorised). Retrying with the same
    identity cannot succeed; security is never weakened to get through."""

    def __init__(self, device_id: str, reason: str) -> None:
        self.device_id = device_id
        self.reason = reason
        super().__init__(f"device {device_id}: broker connection refused for good: {reason}")
