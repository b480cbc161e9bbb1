"""Agent settings: one typed object, loaded from TOML or built in code, then passed in.

    settings = load_settings(Path("/etc/fleetcare/agent.toml"))
    settings = AgentSettings(device_id="sim-0001", broker=BrokerSettings(host="localhost"), ...)

Relative paths in a TOML file are resolved against the file's directory. Unknown keys are
refused (a typo must not silently disable a policy). Every error names the field.
"""

from __future__ import annotations

import re
import tomllib
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.errors import AgentConfigError
from protocol.topics import validate_device_id

__all__ = [
    "DEFAULT_ALLOWED_ACTIONS",
    "DEFAULT_CONSENT_ACTIONS",
    "WEEKDAYS",
    "AgentSettings",
    "BrokerSettings",
    "MaintenanceWindow",
    "PluginSettings",
    "PolicySettings",
    "ReconnectSettings",
    "TlsSettings",
    "load_settings",
    "settings_from_mapping",
]

DEFAULT_ALLOWED_ACTIONS: tuple[str, ...] = (
    "ping",
    "metrics.snapshot",
    "logs.tail",
    "agent.info",
    "network.check",
    "disk.usage",
    "service.status",
    "config.get",
    "selftest",
)
"""The read-only diagnostics every device allows unless its owner says otherwise. Each one
that reads something sensitive is further limited by its own allow-list (``log_paths``,
``network_hosts``, ``services``, ``config_keys``), empty by default."""

DEFAULT_CONSENT_ACTIONS: tuple[str, ...] = ("file.fetch",)
"""Read-only, but it copies whole files off the device: a local operator approves it by default.
Disruptive built-ins (``service.restart``, ``config.set``, ``config.undo``) are forbidden until
the owner lists them."""

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9@._:-]{0,254}")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]{1,253}):([0-9]{1,5})")
_CONFIG_KEY = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Relative paths in a config file mean relative to that file."""
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


FilePath = Annotated[Path, AfterValidator(_resolve)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSettings(_Section):
    host: str = Field(min_length=1)
    port: int = Field(default=8883, ge=1, le=65535)
    keepalive: int = Field(default=30, ge=5, le=3600)
    connect_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds to wait for TCP+TLS+CONNACK, and for each PUBACK/SUBACK."""
    allow_plaintext: bool = False
    """Only for simulated fleets on a local test broker: connect without TLS when ``tls`` is
    unset. A real device must never set this; there is no fallback from TLS to plaintext."""


class TlsSettings(_Section):
    ca_file: FilePath
    cert_file: FilePath
    key_file: FilePath


def _days_label(days: list[Weekday]) -> str:
    """``mon,tue`` / ``mon-fri`` (runs of three or more days) / ``daily``."""
    picked = [i for i, d in enumerate(WEEKDAYS) if d in days]
    if len(picked) == len(WEEKDAYS):
        return "daily"
    runs: list[list[int]] = []
    for i in picked:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{WEEKDAYS[run[0]]}-{WEEKDAYS[run[-1]]}")
        else:
            parts.extend(WEEKDAYS[i] for i in run)
    return ",".join(parts)


class MaintenanceWindow(_Section):
    """When disruptive actions may run: on ``days`` from ``start`` to ``end`` local time in
    ``tz``. An ``end`` at or before ``start`` crosses midnight: ``mon 22:00-06:00`` runs from
    Monday 22:00 to Tuesday 06:00 (``start == end``: 24 hours)."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    start: str
    end: str
    tz: str = "UTC"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.fullmatch(value):
            raise ValueError(f"{value!r} is not a time of day as HH:MM (00:00-23:59)")
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Berlin") from exc
        return value

    @staticmethod
    def _time(value: str) -> time:
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))

    def contains(self, now: datetime) -> bool:
        """Whether the aware instant ``now`` falls inside this window."""
        local = now.astimezone(ZoneInfo(self.tz))
        start, end, clock = self._time(self.start), self._time(self.end), local.time()
        today = WEEKDAYS[local.weekday()]
        if start < end:
            return today in self.days and start <= clock < end
        yesterday = WEEKDAYS[(local - timedelta(days=1)).weekday()]
        return (today in self.days and clock >= start) or (yesterday in self.days and clock < end)

    def label(self) -> str:
        """E.g. ``mon-fri 22:00-06:00 Europe/Berlin`` (for the action catalogue and messages)."""
        return f"{_days_label(self.days)} {self.start}-{self.end} {self.tz}"


class PolicySettings(_Section):
    """The device owner's local policy: what a signed command may still not do here.

    Per action: ``forbidden_actions`` > ``consent_actions`` > ``allowed_actions`` > not listed
    (forbidden). Entries are names or glob patterns; in the allowed and consent lists a pattern
    never matches a *disruptive* action (list it by its exact name)."""

    allowed_actions: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_ACTIONS))
    """Action names, or glob patterns such as ``printer.*``. A *disruptive* action is only
    allowed when listed by its exact name: a pattern never enables one."""
    consent_actions: list[str] = Field(default_factory=lambda: list(DEFAULT_CONSENT_ACTIONS))
    """Allowed only inside a session a local operator approved (``fleetcare agent consent``)."""
    forbidden_actions: list[str] = Field(default_factory=list)
    """Never allowed, whatever the other lists say (patterns match disruptive actions too)."""
    attended: bool = False
    """Every command of a remote session needs a local operator's approval of that session."""
    max_consent_minutes: int = Field(default=480, ge=1, le=7 * 24 * 60)
    """The longest an approval lasts, whatever the operator or the request asks for."""
    windows: list[MaintenanceWindow] = Field(default_factory=list)
    """Maintenance windows: when any is set, disruptive actions run only inside one."""
    services: list[str] = Field(default_factory=list)
    """Service units ``service.status`` / ``service.restart`` may touch."""
    network_hosts: list[str] = Field(default_factory=list)
    """``host:port`` pairs ``network.check`` tests (``[::1]:443`` for IPv6 literals)."""
    fetch_paths: list[FilePath] = Field(default_factory=list)
    """Files, or directories (everything beneath them), that ``file.fetch`` may read."""
    max_fetch_bytes: int = Field(default=64 * 1024 * 1024, ge=1, le=1024 * 1024 * 1024)
    config_file: FilePath | None = None
    """A JSON object of device settings that ``config.get`` / ``config.set`` work on."""
    config_keys: list[str] = Field(default_factory=list)
    """Top-level keys of ``config_file`` that may be read and changed remotely."""
    log_paths: list[FilePath] = Field(default_factory=list)
    """Files, or directories (everything beneath them), that ``logs.tail`` may read."""
    max_log_lines: int = Field(default=500, ge=1, le=100_000)
    max_log_bytes: int = Field(default=256 * 1024, ge=1024, le=4 * 1024 * 1024)
    max_concurrent_actions: int = Field(default=4, ge=1, le=64)
    clock_skew: float = Field(default=120.0, ge=0, le=3600)
    """Seconds a command's ``issued_at`` may lie in the device's future (clock drift)."""

    @field_validator("services")
    @classmethod
    def _services(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _SERVICE_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a service unit name ([A-Za-z0-9@._:-], not starting with -)"
                )
        return value

    @field_validator("network_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            match = _HOST_PORT.fullmatch(entry)
            if not match or not 1 <= int(match.group(2)) <= 65535:
                raise ValueError(f"{entry!r} is not host:port (e.g. mqtt.example.com:8883 or [::1]:443)")
        return value

    @field_validator("config_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not _CONFIG_KEY.fullmatch(key):
                raise ValueError(f"{key!r} is not a configuration key ([A-Za-z0-9_.-], 1-128 characters)")
        return value

    @model_validator(mode="after")
    def _config_pair(self) -> PolicySettings:
        if self.config_keys and self.config_file is None:
            raise ValueError("config_keys needs config_file: the JSON file those keys live in")
        return self


class PluginSettings(_Section):
    name: str = Field(min_length=1)
    """Entry-point name in the ``fleetcare.equipment`` group."""
    options: dict[str, Any] = Field(default_factory=dict)


class ReconnectSettings(_Section):
    initial: float = Field(default=1.0, gt=0, le=3600)
    max: float = Field(default=60.0, gt=0, le=86400)
    stable_after: float = Field(default=30.0, ge=0)
    """A connection that lasted this long resets the backoff; a flapping one does not."""
    on_fatal: Literal["stop", "retry"] = "stop"
    """What to do when the broker refuses this identity (see FatalLinkError): ``stop`` the agent
    (exit status 3), or ``retry`` at the maximum backoff, logging an error each time."""

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectSettings:
        if self.max < self.initial:
            raise ValueError(f"max ({self.max}) must be >= initial ({self.initial})")
        return self


class AgentSettings(_Section):
    device_id: str
    broker: BrokerSettings
    tls: TlsSettings | None = None
    server_key_file: FilePath
    """PEM Ed25519 public key of the server's command-signing key, pinned at provisioning."""
    data_dir: FilePath
    """``agent.sqlite3`` (outbox, sequence counter, replay cache, consent) and ``agent.lock``.
    One agent per directory."""
    storage_journal: Literal["wal", "rollback"] = "wal"
    """``wal``: readers in other processes (``fleetcare agent outbox|consent``) never block the
    agent; three open files. ``rollback``: only the database file stays open (simulated fleets,
    thousands of agents per process); a reader makes the agent's writes wait."""
    storage_sync: Literal["normal", "off"] = "normal"
    """``off`` skips fsync: a power cut may corrupt the database. Only for simulated fleets,
    where a rollback-journal commit would otherwise cost two fsyncs."""
    consent_poll_interval: float = Field(default=0.5, gt=0, le=3600)
    """Seconds between looks for consent decisions made with ``fleetcare agent consent`` (another
    process); in-process ones (``runtime.consent``) are announced at once. Simulated fleets,
    thousands of agents and no operator, look rarely."""
    telemetry_interval: float = Field(default=10.0, gt=0, le=86400)
    outbox_max_messages: int = Field(default=10_000, ge=10)
    """Bound of the queue, and of the messages sent and waiting for the server's receipt."""
    outbox_unconfirmed_max_age: float = Field(default=3600.0, ge=1, le=30 * 86400)
    """Seconds a message the broker acknowledged waits for the server's receipt before it is
    forgotten; as long without any receipt, the agent stops waiting for them (docs/agent.md)."""
    policy: PolicySettings = Field(default_factory=PolicySettings)
    plugins: list[PluginSettings] = Field(default_factory=list)
    site: str | None = Field(default=None, max_length=256)
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)
    collect_system_metrics: bool = True
    """psutil metrics; simulated fleets (thousands of agents per process) turn this off."""
    shutdown_grace: float = Field(default=2.0, ge=0, le=60)
    """On a graceful stop, seconds spent publishing the offline status and what is queued."""

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        return validate_device_id(value)

    @model_validator(mode="after")
    def _transport(self) -> AgentSettings:
        if self.tls is None and not self.broker.allow_plaintext:
            raise ValueError(
                "tls is required: set tls.ca_file, tls.cert_file and tls.key_file "
                "(broker.allow_plaintext is only for simulated fleets on a local test broker)"
            )
        return self


def _errors(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        out.append((field, message))
    return out


def settings_from_mapping(data: dict[str, Any], *, base_dir: Path | None = None) -> AgentSettings:
    """Validate a parsed mapping (e.g. TOML); relative paths resolve against ``base_dir``."""
    try:
        return AgentSettings.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise AgentConfigError(_errors(exc)) from exc


def load_settings(path: Path) -> AgentSettings:
    """Read and validate a TOML agent configuration; raise :class:`AgentConfigError`."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AgentConfigError([("", "file not found")], source=path) from exc
    except OSError as exc:
        raise AgentConfigError([("", f"cannot read the file ({exc.strerror})")], source=path) from exc
    except UnicodeDecodeError as exc:
        raise AgentConfigError([("", "not UTF-8 text")], source=path) from exc
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError([("", f"not valid TOML: {exc}")], source=path) from exc
    try:
        return settings_from_mapping(data, base_dir=path.resolve().parent)
    except AgentConfigError as exc:
        raise AgentConfigError(exc.errors, source=path) from exc.__cause__
