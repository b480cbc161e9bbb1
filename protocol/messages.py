"""Versioned message models: what travels on each topic.

Every up-message carries ``v``, ``device_id``, ``seq`` (per-device monotonic, persisted by the
agent: ``(device_id, seq)`` makes ingestion idempotent) and ``ts`` (device clock, UTC).
Unknown fields are refused (``extra="forbid"``): ``v`` is the version, not silent tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

from protocol.topics import DEVICE_ID_PATTERN, UpKind

__all__ = [
    "CANCEL_ACTION",
    "CONSENT_ACTION",
    "CONTROL_ACTIONS",
    "EVENT_TYPES",
    "MAX_INT",
    "MAX_JSON_DEPTH",
    "MAX_RECEIPT_RANGES",
    "PROTOCOL_VERSION",
    "ActionInfo",
    "AgentInfo",
    "Command",
    "DeviceId",
    "EquipmentInfo",
    "EquipmentState",
    "Event",
    "Inventory",
    "PolicyDecision",
    "Receipt",
    "Reply",
    "ReplyType",
    "Sample",
    "Severity",
    "Status",
    "SystemInfo",
    "Telemetry",
    "UpMessage",
    "UtcDateTime",
    "format_ts",
    "model_for",
    "seq_ranges",
]

PROTOCOL_VERSION: Literal[1] = 1

# Bounds. Every integer on the wire fits a signed 64-bit column (``seq`` is a BIGINT key), every
# count fits 32 bits; a JSON object field (``data``, ``config``, ``args``, ``args_schema``) is at
# most MAX_JSON_DEPTH deep (a depth no real payload comes near; it keeps recursive consumers of
# the value, e.g. serialisers and JSONB, well inside their limits).
MAX_INT = 2**63 - 1
MIN_INT = -(2**63)
MAX_COUNT = 2**31 - 1
MAX_JSON_DEPTH = 32
MAX_RECEIPT_RANGES = 1024
"""Ranges in one receipt (about 40 KB at most); a server with more to confirm sends several."""


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{value.isoformat()} is out of range once converted to UTC") from exc


def _json_path(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part).encode("utf-8", "backslashreplace").decode() for part in path) or "<root>"


def _check_json_leaf(path: tuple[str | int, ...], node: object) -> None:
    if isinstance(node, str):
        try:
            node.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"at {_json_path(path)}: lone surrogate at character {exc.start}") from None
    elif isinstance(node, bool) or node is None:
        pass
    elif isinstance(node, int):
        if not MIN_INT <= node <= MAX_INT:
            raise ValueError(f"at {_json_path(path)}: integer outside the signed 64-bit range")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ValueError(f"at {_json_path(path)}: number {node!r} is not finite")
    # anything else only comes from Python callers (a datetime, a UUID): pydantic serialises it


def _check_json(value: dict[str, Any]) -> dict[str, Any]:
    """Bound a free-form JSON object: integers within 64 bits (PostgreSQL JSONB and consumers of
    the values take them as BIGINT), finite floats (``NaN`` is no JSON, and the signer's
    canonical bytes refuse it), encodable strings and keys, at most MAX_JSON_DEPTH levels. The
    error names the path inside the field. Iterative, so a deep value cannot exhaust the stack.
    Its size is bounded by the payload's (protocol.codec.MAX_PAYLOAD_BYTES): checked when decoding,
    and before publishing by whoever encodes (the agent's outbox, the server's command service)."""
    stack: list[tuple[tuple[str | int, ...], object]] = [((), value)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict | list | tuple):
            _check_json_leaf(path, node)
            continue
        if len(path) >= MAX_JSON_DEPTH:
            raise ValueError(f"at {_json_path(path)}: nested deeper than {MAX_JSON_DEPTH} levels")
        if not isinstance(node, dict):
            stack.extend(((*path, index), item) for index, item in enumerate(node))
            continue
        for key, item in node.items():
            if not isinstance(key, str):
                raise ValueError(f"at {_json_path(path)}: key {key!r} is not a string")
            _check_json_leaf((*path, key), key)
            stack.append(((*path, key), item))
    return value


def format_ts(value: datetime) -> str:
    """The one wire format for time: microsecond precision, always ``Z``. Signatures depend on it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


UtcDateTime = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    PlainSerializer(format_ts, return_type=str, when_used="json"),
]
DeviceId = Annotated[str, StringConstraints(pattern=f"^{DEVICE_ID_PATTERN.pattern}$")]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+(\.[a-z0-9_-]+)*$", max_length=128)]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z_]+(\.[a-z_]+)+$", max_length=64)]
# pydantic refuses lone surrogates in str fields itself; JsonDict values are checked above
ShortText = Annotated[str, StringConstraints(max_length=256)]
Text = Annotated[str, StringConstraints(max_length=8192)]
JsonDict = Annotated[dict[str, Any], AfterValidator(_check_json)]
Seq = Annotated[int, Field(ge=0, le=MAX_INT)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Size = Annotated[int, Field(ge=0, le=MAX_INT)]  # bytes


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class EquipmentState(StrEnum):
    """Operational state reported by the agent. The server adds ``unknown`` (no data)."""

    RUNNING = "running"
    DEGRADED = "degraded"
    DOWN = "down"
    MAINTENANCE = "maintenance"


EVENT_TYPES = frozenset(
    {
        "agent.started",
        "fault.raised",
        "fault.cleared",
        "consumable.low",
        "state.changed",
        "maintenance.started",
        "maintenance.ended",
        "command.rejected",
        # remote sessions: the local operator's answer to a consent request (docs/sessions.md)
        "consent.requested",
        "consent.granted",
        "consent.denied",
    }
)

# Control actions every agent understands. They are signed commands like any other, but the
# owner's policy cannot forbid them: one only *asks* the local operator for consent, the other
# only stops a running command.
CONSENT_ACTION = "session.consent"
"""args: ``technician`` (str), ``reason`` (str), ``until`` (ISO time the session may last to),
``all_commands`` (bool: attended mode, every command in the session needs the approval).
The command's ``session_id`` names the session."""
CANCEL_ACTION = "command.cancel"
"""args: ``command_id``: the running command to stop; it ends with an ``error`` reply whose
reason is ``Cancelled``."""
CONTROL_ACTIONS = frozenset({CONSENT_ACTION, CANCEL_ACTION})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Up(_Model):
    v: Literal[1] = PROTOCOL_VERSION
    device_id: DeviceId
    seq: Seq
    ts: UtcDateTime


class Sample(_Model):
    metric: MetricName
    value: float = Field(allow_inf_nan=False)
    ts: UtcDateTime


class Telemetry(_Up):
    kind: Literal["telemetry"] = "telemetry"
    samples: list[Sample] = Field(min_length=1, max_length=2000)


class Event(_Up):
    kind: Literal["event"] = "event"
    event: EventType
    code: ShortText | None = None
    severity: Severity = Severity.INFO
    detail: Text = ""
    data: JsonDict = Field(default_factory=dict)


class Status(_Up):
    """Retained. ``online=False`` is also the agent's last will; its ``ts`` is then the connect time."""

    kind: Literal["status"] = "status"
    online: bool
    state: EquipmentState | None = None
    reason: ShortText = ""


class EquipmentInfo(_Model):
    kind: ShortText = "generic"
    vendor: ShortText = ""
    model: ShortText = ""
    serial: ShortText = ""
    firmware: ShortText = ""


class SystemInfo(_Model):
    hostname: ShortText = ""
    os: ShortText = ""
    os_version: ShortText = ""
    arch: ShortText = ""
    cpu_count: Count | None = None
    memory_total: Size | None = None
    disk_total: Size | None = None
    python: ShortText = ""
    boot_time: UtcDateTime | None = None


class PolicyDecision(StrEnum):
    """What the device owner's local policy says about one action."""

    ALLOWED = "allowed"
    NEEDS_CONSENT = "needs_consent"  # only inside a session a local operator approved
    FORBIDDEN = "forbidden"


class ActionInfo(_Model):
    """One entry of the action catalogue an agent advertises in its inventory, so the server
    and the technician know what can run on this device, with which arguments, and whether the
    owner's policy allows it."""

    name: ShortText
    description: Text = ""
    disruptive: bool = False
    timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    args_schema: JsonDict = Field(default_factory=dict)
    policy: PolicyDecision = PolicyDecision.ALLOWED
    windows: list[ShortText] = Field(default_factory=list)
    """Maintenance windows (e.g. ``mon-fri 22:00-06:00 Europe/Berlin``) outside which this
    (disruptive) action is refused; empty: any time."""
    source: ShortText = "built-in"


class AgentInfo(_Model):
    version: ShortText
    plugins: list[ShortText] = Field(default_factory=list)
    actions: list[ShortText] = Field(default_factory=list)
    catalogue: list[ActionInfo] = Field(default_factory=list)
    attended: bool = False
    """The owner requires a local operator's consent for every remote session."""


class Inventory(_Up):
    """The installation profile: what a support engineer must know before touching the system."""

    kind: Literal["inventory"] = "inventory"
    equipment: EquipmentInfo
    system: SystemInfo
    agent: AgentInfo
    site: ShortText | None = None
    config: JsonDict = Field(default_factory=dict)


class ReplyType(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PROGRESS = "progress"
    OUTPUT = "output"  # one numbered chunk of a large output
    RESULT = "result"
    ERROR = "error"


class Reply(_Up):
    """A device's answer to one command. Exactly one of accepted/rejected, then progress/output
    chunks, then one terminal ``result`` or ``error`` (or ``rejected``)."""

    kind: Literal["reply"] = "reply"
    command_id: ShortText
    type: ReplyType
    reason: ShortText = ""  # rejected: a RejectReason value; error: an exception class name
    ok: bool | None = None  # result only
    output: Text = ""
    data: JsonDict = Field(default_factory=dict)
    chunk: Count | None = None
    progress: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)


UpMessage = Telemetry | Event | Status | Inventory | Reply

_UP_MODELS: dict[UpKind, type[_Up]] = {
    UpKind.TELEMETRY: Telemetry,
    UpKind.EVENT: Event,
    UpKind.STATUS: Status,
    UpKind.INVENTORY: Inventory,
    UpKind.REPLY: Reply,
}


def model_for(kind: UpKind) -> type[_Up]:
    return _UP_MODELS[kind]


class Command(_Model):
    """A signed order for one device. ``sig`` is Ed25519 over :func:`protocol.signing.canonical_bytes`."""

    v: Literal[1] = PROTOCOL_VERSION
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    device_id: DeviceId
    action: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)*$", max_length=64)]
    args: JsonDict = Field(default_factory=dict)
    issued_at: UtcDateTime
    expires_at: UtcDateTime
    issuer: ShortText
    session_id: ShortText | None = None
    nonce: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    kid: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    sig: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]*$", max_length=128)] = ""


def _ordered_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    for index, (first, last) in enumerate(ranges):
        if first > last:
            raise ValueError(f"at ranges.{index}: first seq {first} is above last seq {last}")
    return ranges


SeqRange = tuple[Seq, Seq]


class Receipt(_Model):
    """Server → device on ``.../down/receipt``: the seqs of this device that the server has
    handled for good (stored, already stored, refused or quarantined: sending them again cannot
    help), as inclusive ``[first, last]`` ranges. The agent forgets a message only then
    (docs/agent.md, "The outbox"). Not signed: only a server identity may write a device's down
    topics, and a forged receipt can only make the agent forget messages the broker has already
    acknowledged (docs/security.md)."""

    v: Literal[1] = PROTOCOL_VERSION
    kind: Literal["receipt"] = "receipt"
    device_id: DeviceId
    ranges: Annotated[list[SeqRange], AfterValidator(_ordered_ranges)] = Field(
        min_length=1, max_length=MAX_RECEIPT_RANGES
    )

    def seqs(self) -> int:
        """How many seqs the ranges cover."""
        return sum(last - first + 1 for first, last in self.ranges)


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """``seqs`` (any order, repeats allowed) as sorted inclusive ranges of consecutive seqs."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges
