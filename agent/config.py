"""Agent settings: one typed object, loaded from TOML or built in code, then passed in.

    settings = load_settings(Path("/etc/fleetcare/agent.toml"))
    settings = AgentSettings(device_id="sim-0001", broker=BrokerSettings(host="localhost"), ...)

Relative paths in a TOML file are resolved against the file's directory. Unknown keys are
refused (a typo must not silently disable a policy). Every error names the field.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

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
    "AgentSettings",
    "BrokerSettings",
    "PluginSettings",
    "PolicySettings",
    "ReconnectSettings",
    "TlsSettings",
    "load_settings",
    "settings_from_mapping",
]

DEFAULT_ALLOWED_ACTIONS: tuple[str, ...] = ("ping", "metrics.snapshot", "logs.tail", "agent.info")
"""The read-only diagnostics every device allows unless its owner says otherwise."""


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


class PolicySettings(_Section):
    """The device owner's local policy: what a signed command may still not do here."""

    allowed_actions: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_ACTIONS))
    """Action names, or glob patterns such as ``printer.*``. A *disruptive* action is only
    allowed when listed by its exact name: a pattern never enables one."""
    log_paths: list[FilePath] = Field(default_factory=list)
    """Files, or directories (everything beneath them), that ``logs.tail`` may read."""
    max_log_lines: int = Field(default=500, ge=1, le=100_000)
    max_log_bytes: int = Field(default=256 * 1024, ge=1024, le=4 * 1024 * 1024)
    max_concurrent_actions: int = Field(default=4, ge=1, le=64)
    clock_skew: float = Field(default=120.0, ge=0, le=3600)
    """Seconds a command's ``issued_at`` may lie in the device's future (clock drift)."""


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
    """Outbox, replay cache and sequence counter (SQLite). One agent per directory."""
    telemetry_interval: float = Field(default=10.0, gt=0, le=86400)
    outbox_max_messages: int = Field(default=10_000, ge=10)
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
