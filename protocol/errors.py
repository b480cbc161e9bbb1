"""Exception tree of the protocol package.

    ProtocolError
    ├── TopicError                 topic outside the fc/v1 tree or with a bad device id
    ├── DecodeError                payload rejected before it reached the application
    │   ├── PayloadTooLarge
    │   ├── NotJson
    │   ├── UnsupportedVersion
    │   ├── SchemaError            JSON fine, fields wrong: names the field and the problem
    │   └── DeviceMismatch         payload's device_id differs from the topic's
    ├── KeyError_                  a signing/verify key that cannot be loaded
    └── CommandRejected            a command failed verification; carries a RejectReason

Each error carries the attributes a person needs to fix the problem; ``str()`` is a
one-line explanation fit for a log or an API response.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CommandRejected",
    "DecodeError",
    "DeviceMismatch",
    "InvalidKey",
    "NotJson",
    "PayloadTooLarge",
    "ProtocolError",
    "RejectReason",
    "SchemaError",
    "TopicError",
    "UnsupportedVersion",
]


class ProtocolError(Exception):
    """Base of every error raised by :mod:`protocol`."""


class TopicError(ProtocolError):
    def __init__(self, topic: str, problem: str) -> None:
        self.topic = topic
        self.problem = problem
        super().__init__(f"topic {topic!r}: {problem}")


class DecodeError(ProtocolError):
    """A payload that cannot become a message. ``reason`` is a stable short code for counters."""

    reason = "invalid"


class PayloadTooLarge(DecodeError):
    reason = "too_large"

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"payload of {size} bytes exceeds the limit of {limit} bytes")


class NotJson(DecodeError):
    reason = "not_json"

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"payload is not a JSON object: {problem}")


class UnsupportedVersion(DecodeError):
    reason = "bad_version"

    def __init__(self, got: object, supported: int) -> None:
        self.got = got
        self.supported = supported
        super().__init__(f"protocol version {got!r} is not supported (this side speaks v={supported})")


class SchemaError(DecodeError):
    """Fields that do not fit the schema. ``errors`` lists (field path, problem) pairs."""

    reason = "schema"

    def __init__(self, message_kind: str, errors: list[tuple[str, str]]) -> None:
        self.message_kind = message_kind
        self.errors = errors
        shown = "; ".join(f"{field or '<root>'}: {problem}" for field, problem in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"invalid {message_kind} message: {shown}{more}")

    @property
    def field(self) -> str:
        return self.errors[0][0] if self.errors else ""


class DeviceMismatch(DecodeError):
    reason = "device_mismatch"

    def __init__(self, topic_device: str, payload_device: str) -> None:
        self.topic_device = topic_device
        self.payload_device = payload_device
        super().__init__(f"payload device_id {payload_device!r} does not match topic device {topic_device!r}")


class InvalidKey(ProtocolError):
    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"unusable command-signing key: {problem}")


class RejectReason(StrEnum):
    """Why a device refused a command. Stable strings: they travel in replies and the audit log."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    WRONG_DEVICE = "wrong_device"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    REPLAYED = "replayed"
    NOT_ALLOWED = "not_allowed"
    UNKNOWN_ACTION = "unknown_action"
    NEEDS_CONSENT = "needs_consent"  # no approved, unexpired consent for the command's session
    CONSENT_DENIED = "consent_denied"  # the local operator denied this session: final
    OUTSIDE_WINDOW = "outside_window"  # a disruptive action outside the owner's maintenance windows
    BAD_ARGS = "bad_args"
    # the device cannot check (e.g. its replay cache is unreadable): it fails closed
    GUARD_UNAVAILABLE = "guard_unavailable"


class CommandRejected(ProtocolError):
    def __init__(
        self,
        reason: RejectReason,
        detail: str,
        *,
        command_id: str | None = None,
        device_id: str | None = None,
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.command_id = command_id
        self.device_id = device_id
        super().__init__(f"command {command_id or '?'} rejected ({reason.value}): {detail}")
