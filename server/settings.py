"""The server's one settings object, built at start-up and passed in (never at import time).

Sources, highest priority first: keyword arguments, environment (``FLEETCARE_`` prefix, ``__``
between nested names: ``FLEETCARE_MQTT__HOST``), the TOML file given to :func:`load_settings`.
Obviously broken values are refused with :class:`server.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

import contextvars
import logging
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from protocol.topics import DEVICE_ID_PATTERN
from server.errors import ConfigError

__all__ = [
    "ApiSettings",
    "AuthSettings",
    "ForecastTarget",
    "IncidentSettings",
    "IngestSettings",
    "KpiSettings",
    "MaintenanceSettings",
    "MqttSettings",
    "ServerSettings",
    "SessionSettings",
    "SimulationSettings",
    "load_settings",
    "sync_database_url",
]

_TOML_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "fleetcare_server_toml", default=None
)

Port = Annotated[int, Field(ge=1, le=65535)]
_ASYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite", "postgresql+psycopg": "postgresql+psycopg"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class MqttSettings(_Section):
    """The server's own broker connection: mutual TLS, persistent session."""

    enabled: bool = True  # False: API only (no ingest, commands cannot be sent)
    host: str = "localhost"
    port: Port = 8883
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # What the server asks for; the fleet's brokers make the certificate's CN the client id (so
    # its persistent session is the CN's): each server process needs its own certificate
    # (`fleetcare certs server NAME`), not only its own client_id.
    client_id: str = "fleetcare-server-1"
    # None or "": plain subscription, the default, because Mosquitto 2.0 does not persist $share
    # subscriptions across its own restart (messages published meanwhile would be dropped);
    # set a group for several ingest workers on a broker that persists them (docs/server.md).
    shared_group: str | None = None
    keepalive: int = Field(default=30, ge=5, le=3600)
    reconnect_min: float = Field(default=0.5, gt=0)
    reconnect_max: float = Field(default=30.0, gt=0)
    publish_timeout: float = Field(default=10.0, gt=0)
    # The broker's ACL file and pid file, when the server runs beside Mosquitto: revoked and
    # retired devices are denied there every access_sync_interval s (server/broker_access.py).
    broker_acl_file: Path | None = None
    broker_pid_file: Path | None = None
    access_sync_interval: float = Field(default=2.0, gt=0, le=3600)

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        if not DEVICE_ID_PATTERN.fullmatch(value):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 . _ -")
        return value

    @field_validator("shared_group", mode="before")
    @classmethod
    def _group(cls, value: object) -> object:
        if value == "":
            return None  # "" disables $share (TOML has no null)
        if isinstance(value, str) and any(ch in value for ch in "/+# "):
            raise ValueError("must be a name without '/', '+', '#' or spaces (\"\" disables $share)")
        return value

    @model_validator(mode="after")
    def _backoff(self) -> MqttSettings:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be >= reconnect_min")
        return self

    def check_tls_files(self) -> None:
        """Raise :class:`ConfigError` naming the first of the connection's certificate files that
        is missing or unreadable (nothing to check with ``enabled`` false). Only what connects to
        the broker needs them: :func:`load_settings` checks them unless told it does not connect."""
        if not self.enabled:
            return
        for name in ("ca_file", "cert_file", "key_file"):
            value: Path | None = getattr(self, name)
            if value is None:
                raise ConfigError(
                    f"mqtt.{name}",
                    f"is required (the broker connection is mutual TLS): set it in --config or "
                    f"FLEETCARE_MQTT__{name.upper()}, or set mqtt.enabled = false to run the API only",
                )
            if not value.is_file():
                raise ConfigError(f"mqtt.{name}", f"{str(value)!r} is not a readable file")


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080
    # a larger request body is refused with 413 before it is read (server/api/body_limit.py)
    max_body_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=1024**3)


class IngestSettings(_Section):
    batch_size: int = Field(default=500, ge=1, le=10000)
    batch_interval: float = Field(default=0.05, gt=0, le=10)
    # close a batch early when the stream pauses (see server/ingest/consumer.py)
    batch_linger: float = Field(default=0.005, gt=0, le=10)
    stats_log_interval: float = Field(default=60.0, gt=0)
    retry_max: float = Field(default=10.0, gt=0)  # longest pause between retries of a failed batch
    # Delivery receipts to the agents (server/ingest/receipts.py): after a batch commits, the seqs
    # handled are confirmed to each device, at most one receipt per device per receipt_interval.
    # Off: agents forget messages on the broker's PUBACK, as they did before receipts.
    receipts: bool = True
    receipt_interval: float = Field(default=0.5, ge=0.05, le=10)


# --- preventive maintenance (docs/preventive-maintenance.md) ------------------------------------


class ForecastTarget(_Section):
    """A family of consumable / wear metrics and the threshold they move toward."""

    pattern: str = Field(min_length=1, max_length=128)  # fnmatch glob over the metric name
    direction: Literal["falling", "rising"]
    threshold: float = Field(allow_inf_nan=False)
    # a step at least this large in the wrong direction is a replacement (0: no reset detection)
    reset_jump: float = Field(default=10.0, ge=0, allow_inf_nan=False)


def default_forecast_targets() -> list[ForecastTarget]:
    """Wear first (``printer.drum.wear.percent`` rises to 100), then levels that fall to 0."""
    rising = ("*.wear.percent", "*.wear.*.percent")
    falling = (
        "*.toner.percent",
        "*.toner.*.percent",
        "*.ink.*.percent",
        "*.drum.*.percent",
        "*.fuser.*.percent",
    )
    return [ForecastTarget(pattern=glob, direction="rising", threshold=100.0) for glob in rising] + [
        ForecastTarget(pattern=glob, direction="falling", threshold=0.0) for glob in falling
    ]


class MaintenanceSettings(_Section):
    rule_interval: float = Field(default=30.0, ge=0, le=3600)  # seconds between rule evaluations; 0: off
    rule_batch_size: int = Field(default=10000, ge=1, le=50000)  # telemetry rows per transaction
    forecast_targets: list[ForecastTarget] = Field(default_factory=default_forecast_targets)
    forecast_window_days: float = Field(default=30.0, gt=0)  # fit over readings this recent …
    forecast_max_points: int = Field(default=500, ge=3, le=10000)  # … and at most this many
    forecast_min_points: int = Field(default=5, ge=3)
    forecast_min_span_s: float = Field(default=3600.0, ge=0)
    forecast_min_r2: float = Field(default=0.5, ge=0, le=1)
    forecast_min_t: float = Field(default=3.0, ge=0)  # |slope| / standard error of the slope
    forecast_horizon_days: float = Field(default=730.0, gt=0)


# --- incidents and equipment states (docs/incidents.md) ----------------------------------------


class IncidentSettings(_Section):
    enabled: bool = True  # derive state intervals and incidents at ingest (False: not at all)
    fault_debounce: float = Field(default=60.0, ge=0, le=86400)  # s of device time: shorter is transient
    offline_grace: float = Field(default=300.0, ge=0, le=7 * 86400)  # s away before unknown + incident
    offline_flap_window: float = Field(default=300.0, ge=0, le=86400)  # s back before it is restored
    # a recurrence of an incident's fault this many hours after its restore (or less) reopens it;
    # later it is a new incident linked as a repeat failure (docs/incidents.md, Recurrence)
    reopen_window_hours: float = Field(default=24.0, ge=0, le=365 * 24)
    reopen_window_days: float | None = Field(default=None, ge=0, le=365)  # old name: days x 24 hours
    clock_skew_tolerance: float = Field(default=5.0, ge=0, le=3600)  # s: smaller offsets stay as sent
    sweep_interval: float = Field(default=5.0, gt=0, le=3600)  # s between sweeps (debounce, grace)
    # service-level targets per priority P1…P4 (docs/incidents.md, Service levels): detection to
    # the first acknowledgement, and detection to the equipment restored
    sla_ack_minutes: tuple[float, float, float, float] = (15.0, 30.0, 120.0, 480.0)
    sla_restore_hours: tuple[float, float, float, float] = (4.0, 8.0, 24.0, 72.0)

    @field_validator("sla_ack_minutes", "sla_restore_hours")
    @classmethod
    def _sla_targets(cls, value: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        year = 366 * 24 * (60 if info.field_name == "sla_ack_minutes" else 1)
        if any(not 0 < target <= year for target in value):
            raise ValueError("each target (P1, P2, P3, P4) must be above 0 and at most a year")
        if list(value) != sorted(value):
            raise ValueError("targets must not shrink from P1 to P4 (P1 is the most urgent)")
        return value

    @model_validator(mode="after")
    def _old_reopen_window(self) -> IncidentSettings:
        """``reopen_window_days`` (the name before issue 15, measured from the resolution) still
        works: it sets ``reopen_window_hours`` to days x 24, measured from the restore."""
        if self.reopen_window_days is None:
            return self
        if "reopen_window_hours" in self.model_fields_set:
            raise ValueError("set only reopen_window_hours (reopen_window_days is its old name, in days)")
        logging.getLogger(__name__).warning(
            "incidents.reopen_window_days is the old name of incidents.reopen_window_hours "
            "(measured from the restore): using %g hours",
            self.reopen_window_days * 24,
        )
        self.reopen_window_hours = self.reopen_window_days * 24
        return self


class AuthSettings(_Section):
    """Sign-in and tokens (docs/api.md#authentication)."""

    login_token_ttl: float = Field(default=12 * 3600.0, gt=0, le=90 * 86400)  # s a sign-in token lives
    api_token_ttl_days: float | None = Field(default=None, gt=0)  # default expiry of CLI-issued tokens
    audit_seal_interval: float = Field(default=1.0, gt=0, le=3600)  # s between audit chain seals
    # signed anchors of the chain head, outside the database (server/anchors/anchor.py)
    # None: <name>-audit-anchors.jsonl beside a SQLite database file; PostgreSQL needs it set
    audit_anchor_file: Path | None = None
    audit_anchor_key_file: Path | None = None  # Ed25519 PKCS8 PEM; None: the command key signing_key_file
    audit_anchor_interval: float = Field(default=60.0, gt=0, le=86400)  # s: the head is checked this often
    audit_anchor_min_gap: float = Field(default=10.0, ge=0, le=3600)  # s at least between two anchors
    audit_anchor_timeout: float = Field(default=10.0, gt=0, le=600)  # s one anchor round may take

    @field_validator("audit_anchor_key_file")
    @classmethod
    def _anchor_key(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{str(value)!r} is not a readable file")
        return value


class SessionSettings(_Section):
    """Remote sessions (docs/sessions.md)."""

    default_time_limit: float = Field(default=3600.0, gt=0, le=24 * 3600)  # s a session may stay active
    max_time_limit: float = Field(default=8 * 3600.0, gt=0, le=7 * 24 * 3600)
    consent_wait: float = Field(default=1800.0, gt=0, le=7 * 86400)  # s to wait for local consent
    max_queue: int = Field(default=5, ge=0, le=100)  # sessions waiting behind the active one
    sweep_interval: float = Field(default=1.0, gt=0, le=60)


class KpiSettings(_Section):
    """KPI engine options (docs/kpis.md)."""

    baseline_restore_hours: float = Field(default=8.0, ge=0, le=24 * 30)
    """Restore time the baseline policy (dispatch an engineer for every incident that does not
    clear by itself) would have taken: travel plus repair. "Downtime avoided" is measured against it."""


class SimulationSettings(_Section):
    """Simulated time for accelerated runs (docs/simulators.md#simulated-time), off by default:
    the server's "now" is ``epoch + (time.time() - real_anchor) * speed``."""

    enabled: bool = False
    epoch: AwareDatetime | None = None  # the simulated time at real_anchor
    real_anchor: float = Field(default=0.0, ge=0)  # Unix time (s) at which the simulation was at epoch
    speed: float = Field(default=1.0, gt=0, le=1e6)

    @model_validator(mode="after")
    def _complete(self) -> SimulationSettings:
        if self.enabled and (self.epoch is None or self.real_anchor <= 0):
            raise ValueError("epoch and real_anchor are required when simulation is enabled")
        return self


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLEETCARE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    database_url: str = "sqlite+aiosqlite:///./var/fleetcare.db"
    # a dict default, validated like any input, so errors name mqtt.<field>
    mqtt: MqttSettings = Field(default_factory=dict)  # type: ignore[assignment]
    signing_key_file: Path | None = None  # Ed25519 PKCS8 PEM; without it commands cannot be sent
    api: ApiSettings = Field(default_factory=ApiSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    command_default_timeout: float = Field(default=60.0, gt=0, le=86400)
    command_sweep_interval: float = Field(default=1.0, gt=0, le=60)
    # False: the clocked jobs (incident, session and command sweeps) are not run on a timer;
    # whoever drives the server's clock calls Runtime.sweep_all(now) (the stepped simulator).
    jobs_in_real_time: bool = True
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    kpi: KpiSettings = Field(default_factory=KpiSettings)
    simulation: SimulationSettings = Field(default_factory=SimulationSettings)
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0]
        if "://" not in value or scheme not in _ASYNC_DRIVERS:
            raise ValueError(
                f"must start with sqlite+aiosqlite:/// or postgresql+psycopg:// (got scheme {scheme!r})"
            )
        return value

    @field_validator("signing_key_file")
    @classmethod
    def _key_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{str(value)!r} is not a readable file")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _TOML_FILE.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def sync_database_url(self) -> str:
        return sync_database_url(self.database_url)


def sync_database_url(url: str) -> str:
    """The URL Alembic (synchronous) uses for the same database."""
    scheme, rest = url.split("://", 1)
    return f"{_ASYNC_DRIVERS.get(scheme, scheme)}://{rest}"


def load_settings(config: Path | None = None, *, connects: bool = True, **overrides: Any) -> ServerSettings:
    """Build the settings from ``config`` (TOML), the environment and ``overrides``.

    ``connects=False`` is for commands that use only the database (user and customer
    administration, reports): the broker connection's certificate files
    (:meth:`MqttSettings.check_tls_files`) are then not checked, since such a command never
    opens it — every other setting still is.
    Raises :class:`ConfigError` naming the first bad setting.
    """
    if config is not None:
        try:
            with config.open("rb") as fh:
                tomllib.load(fh)  # a clear error for a broken file before pydantic sees it
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {str(config)!r}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{str(config)!r} is not valid TOML: {exc}") from exc
    token = _TOML_FILE.set(config)
    try:
        settings = ServerSettings(**overrides)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(part) for part in err["loc"])
        problem = err["msg"].removeprefix("Value error, ")
        raise ConfigError(loc or "settings", problem) from exc
    finally:
        _TOML_FILE.reset(token)
    if connects:
        settings.mqtt.check_tls_files()
    return settings
