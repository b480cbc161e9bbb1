"""Reproduce a device's recorded failure on a simulated replica, so fixes are tried there first.

    recording = await fetch_recording(client, "clinic-xray-7", since, until)   # from the server API
    async with Replica(recording, pki, "broker.example", 8883, data_root=Path("var/replay")) as replica:
        await replica.wait_replayed()

:func:`fetch_recording` reads the device's inventory (its equipment plugin, kind and model),
events and telemetry for ``[since, until)`` from ``/api/v1/devices/…``. :func:`build_plan`
turns them into timed :class:`Step`\\ s, offsets in device seconds after the first record.
:class:`Replica` runs the real agent runtime as ``<id>-replica`` with a :class:`ReplicaPlugin`:
the simulated model of the same kind (``sim-printer``, ``sim-imaging``, ``sim-chiller``) with its
own random faults switched off, re-living the plan on a :class:`~simulators.clock.ScaledClock`
of ``speed`` — so the replica's device timestamps are spaced exactly as the recorded ones,
whatever the speed. Recorded faults are raised in the replica's machine (``inject_fault``),
so the model's remote fix actions really clear them (with the catalogue's probability); with
``keep_faults`` the recorded clearings are skipped and only a fix clears them. The replica's
state follows its machine's faults; recorded ``maintenance`` states, ``consumable.low`` and
faults the model does not know are re-emitted as recorded. Telemetry: the replica reports, at
its recorded interval, the latest recorded value of each metric as of the current offset.

Not reproduced: faults already active before ``since`` (the replica starts clean), the agent's
own events (start-up, commands, consent) and the original fix outcomes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import httpx

from agent.clock import Clock, SystemClock
from agent.config import DEFAULT_ALLOWED_ACTIONS, AgentSettings, BrokerSettings, PolicySettings, TlsSettings
from agent.link import LinkState
from agent.plugin import ActionContext, ActionResult, ActionSpec, EventSink, FaultSpec
from agent.runtime import AgentRuntime
from certs import PkiDir, issue_device_cert
from protocol import EquipmentInfo, EquipmentState, Severity, validate_device_id
from simulators.chiller import ChillerPlugin
from simulators.clock import ScaledClock
from simulators.imaging import ImagingPlugin
from simulators.printer import PAPER_JAM, PrinterPlugin

__all__ = [
    "MACHINES",
    "RecordedEvent",
    "Recording",
    "ReplayError",
    "ReplayPlan",
    "ReplayProgress",
    "Replica",
    "ReplicaPlugin",
    "Step",
    "StepKind",
    "build_plan",
    "fetch_recording",
    "machine_for",
    "replica_id_for",
]

logger = logging.getLogger(__name__)

API = "/api/v1"
EVENT_PAGE = 1000  # the API's largest page of events
TELEMETRY_PAGE = 10000  # … and of telemetry samples
MAX_SAMPLES = 500_000  # a replay window larger than this is refused rather than held in memory
REPLAYED_EVENTS = frozenset({"consumable.low", "maintenance.started", "maintenance.ended"})
DEFAULT_TELEMETRY_INTERVAL = 10.0


class ReplayError(RuntimeError):
    """The replay cannot start; the message says what to change."""


# -- what was recorded ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    ts: datetime
    seq: int
    type: str
    code: str | None = None
    severity: str = "info"
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Recording:
    """A device's inventory, events and telemetry samples ``(ts, metric, value)`` in a window."""

    device_id: str
    since: datetime
    until: datetime
    inventory: Mapping[str, Any]
    events: Sequence[RecordedEvent]
    samples: Sequence[tuple[datetime, str, float]]
    site: str | None = None

    @property
    def kind(self) -> str:
        return str(self.inventory.get("equipment", {}).get("kind", "") or "")

    @property
    def model(self) -> str:
        return str(self.inventory.get("equipment", {}).get("model", "") or "")

    @property
    def plugins(self) -> list[str]:
        agent = self.inventory.get("agent", {}) or {}
        config = self.inventory.get("config", {}) or {}
        return [str(p) for p in (agent.get("plugins") or config.get("plugins") or [])]

    @property
    def telemetry_interval(self) -> float:
        value = (self.inventory.get("config", {}) or {}).get("telemetry_interval")
        return float(value) if isinstance(value, int | float) and value > 0 else DEFAULT_TELEMETRY_INTERVAL


def _ts(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _params(since: datetime, until: datetime, **extra: Any) -> dict[str, Any]:
    return {"since": since.isoformat(), "until": until.isoformat(), **extra}


async def _get(client: httpx.AsyncClient, path: str, device_id: str, **params: Any) -> Any:
    try:
        response = await client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise ReplayError(f"cannot reach the server at {client.base_url}: {exc}; check --url") from exc
    if response.status_code == 401:
        raise ReplayError("the server refused the API token (401): check --token / FLEETCARE_TOKEN")
    if response.status_code in (403, 404):
        raise ReplayError(
            f"device {device_id!r} not found on the server (or not in your scope): check the id "
            "with GET /api/v1/devices"
        )
    if response.status_code >= 400:
        raise ReplayError(f"GET {path} failed with {response.status_code}: {response.text[:300]}")
    return response.json()


async def fetch_recording(
    client: httpx.AsyncClient, device_id: str, since: datetime, until: datetime
) -> Recording:
    """Everything the server stored for ``device_id`` in ``[since, until)``. ``client`` carries
    the base URL and the bearer token. ReplayError when the device or the window has no data."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ReplayError("--from and --to must carry a timezone (e.g. 2026-11-21T05:00:00Z)")
    if not since < until:
        raise ReplayError(f"--from ({since.isoformat()}) must be before --to ({until.isoformat()})")
    base = f"{API}/devices/{device_id}"
    device = await _get(client, base, device_id)
    if not device.get("inventory"):
        raise ReplayError(
            f"device {device_id!r} never sent its inventory, so its kind is unknown: start its agent once"
        )
    events: list[RecordedEvent] = []
    offset = 0
    while True:
        page = await _get(
            client, f"{base}/events", device_id, **_params(since, until, limit=EVENT_PAGE, offset=offset)
        )
        for item in page["items"]:
            events.append(
                RecordedEvent(
                    ts=_ts(item["ts"]),
                    seq=int(item["seq"]),
                    type=item["type"],
                    code=item.get("code"),
                    severity=item.get("severity", "info"),
                    detail=item.get("detail", ""),
                    data=item.get("data") or {},
                )
            )
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            break
    samples: dict[tuple[str, datetime], float] = {}
    upper = until
    while True:  # newest first, pages of TELEMETRY_PAGE walking back in time
        rows = await _get(
            client, f"{base}/telemetry", device_id, **_params(since, upper, limit=TELEMETRY_PAGE)
        )
        for row in rows:
            samples[(row["metric"], _ts(row["ts"]))] = float(row["value"])
        if len(samples) > MAX_SAMPLES:
            raise ReplayError(
                f"more than {MAX_SAMPLES:,} telemetry samples in the window: replay a shorter window"
            )
        if len(rows) < TELEMETRY_PAGE:
            break
        # samples at the oldest instant may have been cut off by the limit: re-read them (until
        # is exclusive, hence a microsecond after); duplicates collapse in ``samples``
        older = min(_ts(row["ts"]) for row in rows) + timedelta(microseconds=1)
        if older >= upper:  # one instant fills a whole page: no progress possible
            break
        upper = older
    if not events and not samples:
        raise ReplayError(
            f"device {device_id!r} has no events or telemetry between {since.isoformat()} and "
            f"{until.isoformat()}: pick a window with data (GET {base}/events)"
        )
    events.sort(key=lambda e: (e.ts, e.seq))
    ordered = sorted(((ts, metric, value) for (metric, ts), value in samples.items()), key=lambda s: s[0])
    return Recording(
        device_id=device_id,
        since=since,
        until=until,
        inventory=device["inventory"],
        events=events,
        samples=ordered,
        site=device.get("site"),
    )


# -- the simulated machine of the same kind ------------------------------------------------


class ReplayableMachine(Protocol):
    """What the replay needs of a simulated model (all three have it)."""

    @property
    def name(self) -> str: ...

    def equipment_info(self) -> EquipmentInfo: ...
    def read_metrics(self, now: datetime) -> Mapping[str, float]: ...
    def actions(self) -> Sequence[ActionSpec]: ...
    def fault_catalogue(self) -> Sequence[FaultSpec]: ...
    async def selftest(self, ctx: ActionContext) -> ActionResult: ...
    def inject_fault(self, code: str, sink: EventSink | None = None) -> bool: ...
    def clear_fault(self, code: str, sink: EventSink | None = None) -> bool: ...

    @property
    def state(self) -> EquipmentState: ...


def _printer(device_id: str, model: str, clock: Clock) -> ReplayableMachine:
    options: dict[str, Any] = {"jam_rate_per_hour": 0.0}
    if model:
        options["model"] = model
    return PrinterPlugin(device_id, options, clock=clock)


def _catalogue(
    cls: type[ImagingPlugin] | type[ChillerPlugin],
) -> Callable[[str, str, Clock], ReplayableMachine]:
    def build(device_id: str, model: str, clock: Clock) -> ReplayableMachine:
        options: dict[str, Any] = {"fault_rate_multiplier": 0.0}  # no faults of its own
        if model:
            options["model"] = model
        return cls(device_id, options, clock=clock)

    return build


MACHINES: dict[str, tuple[str, Callable[[str, str, Clock], ReplayableMachine]]] = {
    "sim-printer": ("printer", _printer),
    "sim-imaging": ("imaging", _catalogue(ImagingPlugin)),
    "sim-chiller": ("chiller", _catalogue(ChillerPlugin)),
}
"""plugin name → (equipment kind, factory of a machine with no random faults of its own)."""


def machine_for(recording: Recording, device_id: str, clock: Clock) -> ReplayableMachine:
    """The simulated model matching the recorded equipment: by plugin name, else by kind."""
    for name in recording.plugins:
        if name in MACHINES:
            return MACHINES[name][1](device_id, recording.model, clock)
    for kind, factory in MACHINES.values():
        if kind == recording.kind:
            return factory(device_id, recording.model, clock)
    kinds = ", ".join(kind for kind, _ in MACHINES.values())
    raise ReplayError(
        f"device {recording.device_id!r} is a {recording.kind or 'device of unknown kind'!r} "
        f"(plugins {', '.join(recording.plugins) or 'none'}): no simulated model for it; "
        f"replay supports the kinds {kinds}"
    )


def replica_id_for(device_id: str) -> str:
    """``<id>-replica`` (the id shortened to stay within the 64-character limit)."""
    return validate_device_id(f"{device_id[: 64 - len('-replica')]}-replica")


# -- the plan --------------------------------------------------------------------------------


class StepKind(StrEnum):
    RAISE = "raise"  # inject the fault into the replica's machine
    CLEAR = "clear"  # clear it there (if it is still active)
    EVENT = "event"  # re-emit the recorded event as is
    STATE = "state"  # maintenance starts (or ends: back to the machine's own state)
    METRICS = "metrics"  # recorded telemetry values from now on


@dataclass(frozen=True, slots=True)
class Step:
    offset: float  # device seconds after the first record
    kind: StepKind
    code: str | None = None
    event: RecordedEvent | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    steps: tuple[Step, ...]
    origin: datetime  # device time of the first record
    skipped_clears: int = 0

    @property
    def duration(self) -> float:
        return self.steps[-1].offset if self.steps else 0.0

    def count(self, kind: StepKind) -> int:
        return sum(1 for step in self.steps if step.kind is kind)

    def scaled(self, speed: float) -> ReplayPlan:
        """Offsets divided by ``speed`` (what a wall clock sees)."""
        return replace(self, steps=tuple(replace(s, offset=s.offset / speed) for s in self.steps))


def build_plan(recording: Recording, known_codes: Sequence[str], *, keep_faults: bool = False) -> ReplayPlan:
    """The recorded events and samples as steps in device-time order (ties keep the recorded
    order: events by seq, then the samples of that instant). Faults in ``known_codes`` go to the
    machine; others are re-emitted as recorded. ``keep_faults`` drops the recorded clearings of
    known faults, so only a fix on the replica clears them."""
    stamps = [e.ts for e in recording.events] + [s[0] for s in recording.samples]
    if not stamps:
        raise ReplayError(f"nothing to replay for {recording.device_id!r}: no events and no telemetry")
    origin = min(stamps)
    known = set(known_codes)
    timed: list[tuple[datetime, int, int, Step]] = []
    skipped = 0
    for event in recording.events:
        offset = (event.ts - origin).total_seconds()
        step: Step | None = None
        if event.type in ("fault.raised", "fault.cleared") and event.code in known:
            if event.type == "fault.raised":
                step = Step(offset, StepKind.RAISE, event.code, event)
            elif keep_faults:
                skipped += 1
            else:
                step = Step(offset, StepKind.CLEAR, event.code, event)
        elif event.type in ("fault.raised", "fault.cleared") or event.type in REPLAYED_EVENTS:
            step = Step(offset, StepKind.EVENT, event.code, event)
        elif event.type == "state.changed" and EquipmentState.MAINTENANCE.value in (
            event.data.get("to"),
            event.data.get("from"),
        ):
            step = Step(offset, StepKind.STATE, None, event)
        if step is not None:
            timed.append((event.ts, 0, event.seq, step))
    frames: dict[datetime, dict[str, float]] = {}
    for ts, metric, value in recording.samples:
        frames.setdefault(ts, {})[metric] = value
    for ts, metrics in frames.items():
        timed.append((ts, 1, 0, Step((ts - origin).total_seconds(), StepKind.METRICS, metrics=metrics)))
    timed.sort(key=lambda t: (t[0], t[1], t[2]))
    return ReplayPlan(tuple(t[3] for t in timed), origin, skipped)


# -- the replica's equipment plugin ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    done: int
    total: int
    offset: float  # device seconds replayed
    duration: float
    active_faults: tuple[str, ...]

    def line(self) -> str:
        faults = ", ".join(self.active_faults) or "none"
        return (
            f"replayed {self.done}/{self.total} steps, {self.offset:,.0f}/{self.duration:,.0f} s "
            f"of device time; active faults on the replica: {faults}"
        )


class ReplicaPlugin:
    """The replica's equipment: ``machine`` re-living ``plan`` on ``clock`` (see the module
    docstring). The machine's actions, self-test and fault catalogue are the replica's."""

    def __init__(self, machine: ReplayableMachine, plan: ReplayPlan, *, clock: Clock, source: str) -> None:
        self.machine = machine
        self.name = machine.name
        self.plan = plan
        self.clock = clock
        self.source = source
        self.done = asyncio.Event()
        self._next = 0
        self._offset = 0.0
        self._metrics: dict[str, float] = {}

    # EquipmentPlugin
    def equipment_info(self) -> EquipmentInfo:
        return self.machine.equipment_info()

    def read_metrics(self, now: datetime) -> dict[str, float]:
        return {**self.machine.read_metrics(now), **self._metrics}

    def actions(self) -> Sequence[ActionSpec]:
        return self.machine.actions()

    def fault_catalogue(self) -> Sequence[FaultSpec]:
        return self.machine.fault_catalogue()

    async def selftest(self, ctx: ActionContext) -> ActionResult:
        return await self.machine.selftest(ctx)

    async def run(self, sink: EventSink) -> None:
        """Walk the plan on the clock, then keep the replica as the plan left it."""
        sink.set_state(self.machine.state, f"replica of {self.source}")
        start = self.clock.now()
        for index, step in enumerate(self.plan.steps):
            wait = step.offset - (self.clock.now() - start).total_seconds()
            if wait > 0:
                await self.clock.sleep(wait)
            try:
                self.apply(step, sink)
            except ValueError as exc:  # e.g. a recorded event the protocol now refuses: skip it
                logger.warning("replica of %s: step %d (%s) skipped: %s", self.source, index, step.kind, exc)
            self._next, self._offset = index + 1, step.offset
        self.done.set()

    def apply(self, step: Step, sink: EventSink) -> None:
        """One step, now."""
        event = step.event
        if step.kind is StepKind.METRICS:
            self._metrics.update(step.metrics)
        elif step.kind is StepKind.RAISE and step.code is not None:
            self.machine.inject_fault(step.code, sink)
        elif step.kind is StepKind.CLEAR and step.code is not None:
            self.machine.clear_fault(step.code, sink)
        elif step.kind is StepKind.EVENT and event is not None:
            sink.emit_event(
                event.type,
                code=event.code,
                severity=Severity(event.severity),
                detail=event.detail,
                data={**event.data, "replay_of": self.source},
            )
        elif step.kind is StepKind.STATE and event is not None:
            if event.data.get("to") == EquipmentState.MAINTENANCE.value:
                sink.set_state(EquipmentState.MAINTENANCE, event.detail or "maintenance (replayed)")
            else:
                sink.set_state(self.machine.state, event.detail or "maintenance ended (replayed)")

    def progress(self) -> ReplayProgress:
        book = getattr(self.machine, "book", None)  # the catalogue-driven models
        if book is not None:
            active = tuple(sorted(book.active))
        else:  # the printer: one fault, the jam
            active = (PAPER_JAM.code,) if getattr(self.machine, "jam", None) is not None else ()
        return ReplayProgress(self._next, len(self.plan.steps), self._offset, self.plan.duration, active)


# -- the replica under the real agent runtime --------------------------------------------------


class Replica:
    """Async context manager: the replica's agent runs (mutual TLS, its own certificate, issued
    from ``pki`` when missing) from entry to exit; :meth:`wait_replayed` waits for the plan."""

    def __init__(
        self,
        recording: Recording,
        pki: PkiDir,
        broker_host: str,
        broker_port: int,
        *,
        data_root: Path,
        speed: float = 1.0,
        keep_faults: bool = False,
        replica_id: str | None = None,
        shutdown_grace: float = 1.0,
    ) -> None:
        if not (isinstance(speed, int | float) and math.isfinite(speed) and speed > 0):
            raise ReplayError(f"--speed must be a number > 0, got {speed!r}")
        self.recording = recording
        self.pki = pki
        self.replica_id = replica_id or replica_id_for(recording.device_id)
        self.clock: Clock = ScaledClock(speed)
        machine = machine_for(recording, self.replica_id, self.clock)
        codes = [spec.code for spec in machine.fault_catalogue()]
        self.plan = build_plan(recording, codes, keep_faults=keep_faults)
        self.plugin = ReplicaPlugin(machine, self.plan, clock=self.clock, source=recording.device_id)
        actions = [spec.name for spec in machine.actions()]
        self.settings = AgentSettings(
            device_id=self.replica_id,
            broker=BrokerSettings(host=broker_host, port=broker_port),
            tls=TlsSettings(
                ca_file=pki.ca_cert,
                cert_file=pki.device_cert(self.replica_id),
                key_file=pki.device_key(self.replica_id),
            ),
            server_key_file=pki.signing_pub,
            data_dir=Path(data_root) / self.replica_id,
            telemetry_interval=recording.telemetry_interval,
            policy=PolicySettings(allowed_actions=[*DEFAULT_ALLOWED_ACTIONS, *actions]),
            site=recording.site,
            collect_system_metrics=False,
            shutdown_grace=shutdown_grace,
        )
        self.agent: AgentRuntime | None = None

    async def __aenter__(self) -> Self:
        pki, device = self.pki, self.replica_id
        if not (pki.device_cert(device).exists() and pki.device_key(device).exists()):
            await asyncio.to_thread(issue_device_cert, pki, device, overwrite=True)
        self.agent = AgentRuntime(
            self.settings, plugins=[self.plugin], clock=self.clock, command_clock=SystemClock()
        )
        await self.agent.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            await agent.__aexit__(exc_type, exc, tb)

    @property
    def connected(self) -> bool:
        return self.agent is not None and self.agent.link_state is LinkState.CONNECTED

    async def wait_replayed(self) -> None:
        await self.plugin.done.wait()

    def progress(self) -> ReplayProgress:
        return self.plugin.progress()
