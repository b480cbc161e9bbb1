"""The agent runtime: wires link, outbox, collectors, guard, actions and plugins together.

    async with AgentRuntime(settings) as agent:      # or: await run_agent(settings)
        await agent.wait_connected()
        ...
        await agent.drained()                          # everything queued reached the broker

One :class:`asyncio.TaskGroup` of named tasks per runtime — ``agent[<id>].link``, ``.publisher``,
``.telemetry``, ``.commands``, ``.plugin[<name>]`` — owned by the context manager. Leaving the
``async with`` is the one teardown path: goodbye status (on a clean exit, bounded by
``shutdown_grace``), cancel the tasks, wait for them, close the database, release the data-dir
lock. If a task fails (e.g. :class:`FatalLinkError`), the others are cancelled and its exception
is raised from the ``async with`` (unwrapped when it is the only one).

Every received command goes through the inbox (agent/inbox.py): committed before its PUBACK,
then guarded and run by :class:`agent.intake.CommandIntake`, which also finishes at start-up what
a crash left unanswered.

Every up-message goes through the outbox (``seq`` assigned and stored before publishing); the
publisher drains it in seq order whenever the link is connected (woken, never polling) and takes
the server's receipts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from agent.actions import ActionExecutor, ActionRegistry, LogAccess, builtin_actions, device_actions
from agent.actions.control import control_actions
from agent.actions.services import ServiceManager
from agent.clock import Clock, SystemClock
from agent.collectors import PluginCollector, SystemCollector
from agent.config import AgentSettings
from agent.consent import ConsentRecord, ConsentState, ConsentStore
from agent.errors import AgentConfigError, AgentError
from agent.guard import CommandGuard
from agent.inbox import Inbox
from agent.intake import CommandIntake
from agent.inventory import action_catalogue, send_inventory
from agent.link import LinkState, MqttLink
from agent.outbox import Outbox
from agent.plugin import EquipmentPlugin
from agent.plugins import check_plugin, load_plugins
from agent.policy import ActionPolicy
from agent.publisher import Publisher
from agent.replay import SqliteReplayCache
from agent.storage import database_path, lock_data_dir
from agent.stores import open_agent_database
from agent.telemetry import TelemetryLoop
from agent.uplink import Uplink
from fleetcare import __version__
from protocol import (
    ActionInfo,
    Command,
    CommandVerifier,
    EquipmentState,
    InvalidKey,
    ReplyType,
    Severity,
    format_ts,
    load_public_key,
)

__all__ = ["AgentRuntime", "run_agent"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class AgentRuntime:
    """One device's agent. Construct with settings (and optionally plugin instances and a
    clock), then enter it as an async context manager — or call :meth:`run`."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        plugins: Sequence[EquipmentPlugin] | None = None,
        clock: Clock | None = None,
        command_clock: Clock | None = None,
        service_manager: ServiceManager | None = None,
    ) -> None:
        self.settings = settings
        self.device_id = settings.device_id
        self.name = f"agent[{settings.device_id}]"
        self.clock: Clock = clock or SystemClock()
        # Commands are signed with the server's wall clock: a simulator running equipment on a
        # fast clock passes SystemClock() here so validity windows stay meaningful.
        self.command_clock: Clock = command_clock or self.clock
        self.state: EquipmentState | None = None
        policy = settings.policy
        if plugins is not None:
            self.plugins = [check_plugin(p, str(getattr(p, "name", p))) for p in plugins]
        else:
            self.plugins = load_plugins(settings.plugins, self.device_id)
        try:
            key = load_public_key(Path(settings.server_key_file).read_bytes())
        except (OSError, InvalidKey) as exc:
            raise AgentConfigError(
                [("server_key_file", f"cannot use {settings.server_key_file}: {exc}")]
            ) from exc
        self._verifier = CommandVerifier(key, self.device_id, clock_skew=timedelta(seconds=policy.clock_skew))
        self.registry = ActionRegistry()
        logs = LogAccess(policy.log_paths, max_lines=policy.max_log_lines, max_bytes=policy.max_log_bytes)
        self.registry.add_all(
            builtin_actions(metrics=self._metrics_now, info=self.info, logs=logs), source="built-in"
        )
        self.registry.add_all(
            device_actions(
                policy,
                data_dir=Path(settings.data_dir),
                plugins=self.plugins,
                service_manager=service_manager or self._plugin_service_manager(),
            ),
            source="built-in",
        )
        self.registry.add_all(
            control_actions(
                consent=lambda: self.consent,
                cancel=self._cancel,
                on_requested=self._consent_requested,
                now=self.command_clock.now,
            ),
            source="control",
        )
        for plugin in self.plugins:
            self.registry.add_all(plugin.actions(), source=f"plugin {plugin.name!r}")
        self._policy = ActionPolicy.from_settings(policy)
        for name in sorted(self._policy.exact - set(self.registry.names())):
            logger.warning("%s: allowed action %r is not offered by any built-in or plugin", self.name, name)
        self.executor = ActionExecutor(
            device_id=self.device_id,
            send=self._reply,
            now=self.clock.now,
            max_concurrent=policy.max_concurrent_actions,
            room=self._room,
            on_start=self._command_started,
        )
        # Streamed output waits while this many messages are queued: far below the outbox
        # bound, so a long stream neither swells the disk queue nor pushes out telemetry.
        self._stream_limit = max(2, min(256, settings.outbox_max_messages // 2))
        self._consent: ConsentStore | None = None
        self._telemetry_loop = TelemetryLoop(
            self.name,
            self.clock,
            settings.telemetry_interval,
            system=SystemCollector() if settings.collect_system_metrics else None,
            collectors=[PluginCollector(p) for p in self.plugins],
            outbox_counts=lambda: (self.outbox.depth(), self.outbox.dropped_telemetry),
            send=lambda at, metrics: self.uplink.telemetry(at, metrics),  # noqa: PLW0108 - no uplink yet
        )
        self._link = MqttLink(
            settings, will=self._will, on_connected=self._birth, name=f"{self.name}.link", keep=self._keep
        )
        self._guard: CommandGuard | None = None
        self._entered = False
        self._stop = asyncio.Event()
        self._consent_decided = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._outbox: Outbox | None = None
        self._replay: SqliteReplayCache | None = None
        self._inbox: Inbox | None = None
        self._intake: CommandIntake | None = None
        self._uplink: Uplink | None = None
        self._publisher: Publisher | None = None
        self._started_monotonic = time.monotonic()

    # -- public surface ----------------------------------------------------------------------

    @property
    def link(self) -> MqttLink:
        return self._link

    @property
    def link_state(self) -> LinkState:
        return self._link.state

    @property
    def actions(self) -> list[str]:
        return self.registry.names()

    async def wait_connected(self) -> None:
        """Until the link is connected (raises the FatalLinkError if it failed for good)."""
        await self._link.wait_connected()

    def outbox_depth(self) -> int:
        return self.outbox.depth()

    async def drained(self) -> None:
        """Until the outbox is empty: everything queued so far was acknowledged by the broker."""
        await self._running(self._publisher).drained()

    def stop(self) -> None:
        """Ask :meth:`run` / :meth:`wait_stopped` to return (signal-handler safe, idempotent)."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def run(self) -> None:
        """Start, run until :meth:`stop`, shut down."""
        async with self:
            await self._stop.wait()

    def _running(self, part: _T | None) -> _T:
        if part is None:
            raise RuntimeError(f"{self.name} is not running")
        return part

    @property
    def guard(self) -> CommandGuard:
        return self._running(self._guard)

    @property
    def outbox(self) -> Outbox:
        return self._running(self._outbox)

    @property
    def inbox(self) -> Inbox:
        return self._running(self._inbox)

    @property
    def consent(self) -> ConsentStore:
        """The local operator's side, in-process: ``approve(session_id, by, ttl)``,
        ``deny(session_id, by, reason)``, ``pending()`` (same store as ``fleetcare agent consent``)."""
        return self._running(self._consent)

    @property
    def policy(self) -> ActionPolicy:
        return self._policy

    @property
    def uplink(self) -> Uplink:
        return self._running(self._uplink)

    def emit_event(
        self,
        event: str,
        *,
        code: str | None = None,
        severity: Severity = Severity.INFO,
        detail: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue an Event (the EventSink behind every plugin). Raises ValueError if invalid."""
        self.uplink.event(event, code=code, severity=severity, detail=detail, data=data)

    def set_state(self, state: EquipmentState, reason: str = "") -> None:
        """Record the equipment's state; on change, queue a retained Status and a state.changed event."""
        state = EquipmentState(state)
        if state == self.state:
            return
        previous, self.state = self.state, state
        self.uplink.status(online=True, state=state, reason=reason)
        severity = (
            Severity.WARNING if state in (EquipmentState.DOWN, EquipmentState.DEGRADED) else Severity.INFO
        )
        self.emit_event(
            "state.changed",
            severity=severity,
            detail=reason,
            data={"from": previous.value if previous else None, "to": state.value, "reason": reason},
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> AgentRuntime:
        if self._entered:
            raise RuntimeError(f"{self.name} can only be started once")
        self._entered = True
        try:
            self._open()
            self._queue_start_messages()
        except BaseException:
            self._close()
            raise
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._spawn(self._link.run(), "link")
        self._spawn(self._running(self._publisher).run(), "publisher")
        self._spawn(self._telemetry_loop.run(), "telemetry")
        self._spawn(self._commands(), "commands")
        self._spawn(self._consent_decisions(), "consent")
        for plugin in self.plugins:
            self._spawn(self._plugin_task(plugin), f"plugin[{plugin.name}]")
        logger.info(
            "%s started: plugins %s, actions %s", self.name, [p.name for p in self.plugins], self.actions
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        assert self._tg is not None
        cancelled = False
        try:
            if exc_type is None:
                try:
                    await self._goodbye()
                except asyncio.CancelledError:
                    cancelled = True  # a task failed meanwhile (the group cancelled us) or we were cancelled
                except Exception:  # the teardown must go on: tasks, databases, lock
                    logger.exception("%s: goodbye failed", self.name)
            for task in self._tasks:
                task.cancel()
            try:
                await self._tg.__aexit__(exc_type, exc, None)
            except BaseExceptionGroup as group:
                # The same FatalLinkError may arrive twice: from the link task and from a
                # wait_connected() in the body. One distinct error is raised as itself.
                leaves = list({id(e): e for e in _leaves(group)}.values())
                if len(leaves) == 1:
                    raise leaves[0] from None
                raise
        finally:
            self._close()
            self._stop.set()
            logger.info("%s stopped", self.name)
        if cancelled:
            raise asyncio.CancelledError

    def _spawn(self, coro: Any, role: str) -> None:
        assert self._tg is not None
        self._tasks.append(self._tg.create_task(coro, name=f"{self.name}.{role}"))

    def _open(self) -> None:
        settings = self.settings
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = lock_data_dir(data_dir)
        # One database, one connection for the three stores: see agent/storage.py.
        self._db = db = open_agent_database(
            data_dir, journal=settings.storage_journal, sync=settings.storage_sync
        )
        path = database_path(data_dir)
        self._outbox = Outbox(
            path,
            self.device_id,
            max_messages=settings.outbox_max_messages,
            unconfirmed_max_age=settings.outbox_unconfirmed_max_age,
            now=lambda: self.clock.now().timestamp(),
            db=db,
        )
        self._replay = SqliteReplayCache(
            path, now=self.command_clock.now, skew=self._verifier.clock_skew, db=db
        )
        self._inbox = Inbox(
            path,
            now=lambda: self.clock.now().timestamp(),
            durable=settings.storage_sync != "off",
            db=db,
        )
        self._consent = ConsentStore(
            path,
            now=self.command_clock.now,
            max_approval=timedelta(minutes=settings.policy.max_consent_minutes),
            db=db,
            on_decided=self._consent_decided.set,
        )
        self._guard = CommandGuard(
            verifier=self._verifier,
            policy=self._policy,
            registry=self.registry,
            replay_cache=self._replay,
            now=self.command_clock.now,
            consent=self._consent,
        )
        self._publisher = Publisher(self._outbox, self._link, name=f"{self.name}.publisher")
        self._uplink = Uplink(self._outbox, self.device_id, self.clock, on_queued=self._publisher.notify)
        self._intake = CommandIntake(
            name=self.name,
            inbox=self._inbox,
            guard=self._guard,
            replay=self._replay,
            executor=self.executor,
            uplink=self._uplink,
            emit_event=self.emit_event,
        )
        self._started_monotonic = time.monotonic()

    def _close(self) -> None:
        for store in (self._outbox, self._replay, self._inbox, self._consent):
            if store is not None:
                store.close()
        self._outbox = self._replay = self._inbox = self._consent = None
        if self._db is not None:
            self._db.close()
            self._db = None
        self._uplink = self._publisher = None
        self._intake = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    async def _goodbye(self) -> None:
        """Clean exit: say we are going offline, give the queue ``shutdown_grace`` seconds."""
        grace = self.settings.shutdown_grace
        if grace <= 0 or self._link.state is not LinkState.CONNECTED:
            return
        self.uplink.status(online=False, state=None, reason="agent stopped")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.drained()

    # -- messages ----------------------------------------------------------------------------

    def _will(self) -> bytes:
        return self.uplink.will()

    def _birth(self) -> None:
        # Through the outbox: it supersedes queued statuses and goes out after the backlog, so
        # the retained status at the broker ends up being the newest one.
        self.uplink.status(online=True, state=self.state, reason="connected")

    def _reply(self, command_id: str, type: ReplyType, **fields: Any) -> None:
        self._running(self._intake).reply(command_id, type, **fields)

    def _queue_start_messages(self) -> None:
        names = [p.name for p in self.plugins]
        self.emit_event(
            "agent.started",
            detail=f"fleetcare agent {__version__}",
            data={"version": __version__, "plugins": names},
        )
        send_inventory(
            self.uplink,
            self.settings,
            self.plugins,
            actions=self.actions,
            catalogue=self.catalogue(),
            name=self.name,
        )

    def catalogue(self) -> list[ActionInfo]:
        """One entry per action a technician may name, with what the owner's policy says about it."""
        return action_catalogue(self.registry, self._policy)

    def _plugin_service_manager(self) -> ServiceManager | None:
        for plugin in self.plugins:
            factory = getattr(plugin, "service_manager", None)
            if callable(factory):
                manager: ServiceManager = factory()
                return manager
        return None

    def info(self) -> dict[str, Any]:
        """Self-description for ``agent.info``."""
        return {
            "version": __version__,
            "device_id": self.device_id,
            "plugins": [p.name for p in self.plugins],
            "actions": self.actions,
            "outbox_depth": self.outbox.depth(),
            "dropped_telemetry": self.outbox.dropped_telemetry,
            "uptime_seconds": round(time.monotonic() - self._started_monotonic, 3),
            "link": self._link.state.value,
            "connections": self._link.connections,
            "state": self.state.value if self.state else None,
        }

    # -- tasks -------------------------------------------------------------------------------

    async def _metrics_now(self) -> dict[str, float]:
        return await self._telemetry_loop.metrics_now()

    async def _room(self) -> None:
        await self._running(self._publisher).below(self._stream_limit)

    def _cancel(self, command_id: str, by: str) -> bool:
        return self.executor.cancel(command_id, by)

    def _consent_requested(self, record: ConsentRecord) -> None:
        logger.warning(
            "%s: technician %s asks consent for session %s until %s: %s "
            "(approve: fleetcare agent consent approve %s)",
            self.name,
            record.technician,
            record.session_id,
            format_ts(record.until),
            record.reason,
            record.session_id,
        )
        self.emit_event(
            "consent.requested",
            detail=f"{record.technician} asks consent for session {record.session_id}: {record.reason}"[
                :8192
            ],
            data={
                "session_id": record.session_id,
                "technician": record.technician,
                "reason": record.reason,
                "until": format_ts(record.until),
                "all_commands": record.all_commands,
            },
        )

    def announce_consent_decisions(self) -> int:
        """Queue ``consent.granted`` / ``consent.denied`` for every decision not yet announced;
        each exactly once (a once-key in the outbox, see agent/consent.py). Returns how many."""
        store = self.consent
        queued = 0
        for record in store.unannounced():
            key = f"consent:{record.session_id}:{record.decision}"
            if record.state is ConsentState.APPROVED:
                assert record.expires_at is not None
                event, data = (
                    "consent.granted",
                    {
                        "session_id": record.session_id,
                        "approved_by": record.decided_by,
                        "expires_at": format_ts(record.expires_at),
                    },
                )
            else:
                event, data = (
                    "consent.denied",
                    {
                        "session_id": record.session_id,
                        "denied_by": record.decided_by,
                        "reason": record.deny_reason or "",
                    },
                )
            detail = f"session {record.session_id}: {event.removeprefix('consent.')} by {record.decided_by}"
            if self.uplink.event_once(key, event, detail=detail, data=data) is not None:
                queued += 1
            store.mark_announced(record.session_id, record.decision)
        return queued

    async def _consent_decisions(self) -> None:
        """Announce decisions: at once when made in-process (``runtime.consent``); the CLI decides
        in another process, so also look every ``consent_poll_interval`` seconds."""
        interval = self.settings.consent_poll_interval
        while True:
            self._consent_decided.clear()
            try:
                self.announce_consent_decisions()
            except AgentError:
                logger.warning("%s: cannot read consent decisions", self.name, exc_info=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):  # no task per wait, unlike wait_for in 3.11
                    await self._consent_decided.wait()

    def _keep(self, payload: bytes, redelivered: bool) -> None:
        self._running(self._intake).keep(payload, redelivered)

    def _command_started(self, command: Command) -> None:
        self._running(self._intake).started(command)

    async def _commands(self) -> None:
        await self._running(self._intake).run(self._link.incoming)

    async def _plugin_task(self, plugin: EquipmentPlugin) -> None:
        try:
            await plugin.run(self)  # the runtime is the plugins' EventSink
        except Exception as exc:  # the plugin boundary: the agent keeps serving without it
            logger.exception("%s: plugin %r stopped with an error", self.name, plugin.name)
            self.emit_event(
                "fault.raised",
                code="agent.plugin_failed",
                severity=Severity.WARNING,
                detail=f"equipment plugin {plugin.name!r} stopped: {exc!r}"[:8192],
                data={"plugin": plugin.name},
            )


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def run_agent(settings: AgentSettings, *, plugins: Sequence[EquipmentPlugin] | None = None) -> None:
    """Run one agent until SIGTERM/SIGINT (the CLI's ``fleetcare agent run``)."""
    loop = asyncio.get_running_loop()
    runtime = AgentRuntime(settings, plugins=plugins)
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on the main thread / platform
            loop.add_signal_handler(sig, runtime.stop)
            handled.append(sig)
    try:
        await runtime.run()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
