"""The app factory. The lifespan owns the database engine (migrations first), the MQTT link,
the ingest task and the command sweeper; routes reach them through ``server.api.deps``.

Shutdown order: stop taking messages, flush the pending batch (commit), acknowledge it,
then disconnect from the broker, then close the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from fleetcare import __version__
from server import clock as server_clock
from server.api import api_router
from server.api.body_limit import BodyLimit
from server.api.errors import install_error_handlers
from server.broker_access import AccessSync
from server.db import create_engine, create_sessionmaker, run_migrations
from server.errors import ConfigError
from server.incidents import IncidentTracker
from server.ingest import BatchWriter, Consumer, IngestStats
from server.mqtt import MqttLink
from server.runtime import Runtime
from server.services.audit import run_sealer
from server.services.audit_anchorer import AuditAnchorer
from server.services.commands import CommandService
from server.services.rules import run_rule_evaluator
from server.sessions.service import SessionService
from server.settings import ServerSettings
from server.web import install_web

__all__ = ["create_app", "load_signer", "start_runtime"]

logger = logging.getLogger(__name__)


def load_signer(path: Path | None) -> protocol.CommandSigner | None:
    """The command signer from ``signing_key_file``; None when not configured."""
    if path is None:
        logger.warning("signing_key_file is not set: commands cannot be sent")
        return None
    try:
        return protocol.CommandSigner(protocol.load_private_key(path.read_bytes()))
    except OSError as exc:
        raise ConfigError("signing_key_file", f"cannot read {str(path)!r}: {exc.strerror}") from exc
    except protocol.InvalidKey as exc:
        raise ConfigError("signing_key_file", exc.problem) from exc


def _start_audit(
    tg: asyncio.TaskGroup, settings: ServerSettings, sessions: async_sessionmaker[AsyncSession]
) -> list[asyncio.Task[None]]:
    """The audit log's tasks: seal new entries into the hash chain (server/services/audit.py)
    and anchor the sealed head outside the database (server/services/audit_anchor.py)."""
    anchorer = AuditAnchorer.from_settings(settings, sessions)
    sealer = run_sealer(
        sessions, settings.auth.audit_seal_interval, on_sealed=anchorer.notify if anchorer else None
    )
    tasks = [tg.create_task(sealer, name="server.audit.sealer")]
    if anchorer is not None:
        tasks.append(tg.create_task(anchorer.run(), name="server.audit.anchorer"))
    return tasks


@asynccontextmanager
async def start_runtime(settings: ServerSettings, *, migrate: bool = True) -> AsyncIterator[Runtime]:
    """Everything the server runs, started; stopped in order on exit."""
    signer = load_signer(settings.signing_key_file)
    if migrate:
        await asyncio.to_thread(run_migrations, settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        sessions = create_sessionmaker(engine)
        link = MqttLink(settings.mqtt) if settings.mqtt.enabled else None
        commands = CommandService(sessions, link, signer, default_timeout=settings.command_default_timeout)
        runtime = Runtime(settings, engine, sessions, commands, IngestStats(), link)
        async with asyncio.TaskGroup() as tg:
            sweeper = tg.create_task(
                commands.run_sweeper(settings.command_sweep_interval), name="server.commands.sweeper"
            )
            # remote sessions: time limits, unanswered consent requests, the queue (server/sessions)
            session_sweeper = tg.create_task(
                SessionService(sessions, commands, settings.sessions).run_sweeper(),
                name="server.sessions.sweeper",
            )
            # the audit log: seal the hash chain, anchor its head (server/services/audit*.py)
            audit_tasks = _start_audit(tg, settings, sessions)
            # revoked and retired devices denied on the broker (server/broker_access.py)
            access_sync = None
            if settings.mqtt.enabled and settings.mqtt.broker_acl_file is not None:
                access_sync = tg.create_task(
                    AccessSync(
                        sessions,
                        settings.mqtt.broker_acl_file,
                        settings.mqtt.broker_pid_file,
                        interval=settings.mqtt.access_sync_interval,
                    ).run(),
                    name="server.broker_access",
                )
            # preventive maintenance: threshold rules over new telemetry (server/services/rules.py)
            rule_evaluator = None
            if settings.maintenance.rule_interval > 0:
                rule_evaluator = tg.create_task(
                    run_rule_evaluator(
                        sessions,
                        settings.maintenance.rule_interval,
                        batch_size=settings.maintenance.rule_batch_size,
                    ),
                    name="server.rules.evaluator",
                )
            # incidents and state intervals: at ingest, plus a sweeper (server/incidents)
            incidents = IncidentTracker(settings.incidents) if settings.incidents.enabled else None
            incident_sweeper = None
            if incidents is not None:
                incident_sweeper = tg.create_task(
                    incidents.run_sweeper(sessions), name="server.incidents.sweeper"
                )
            consumer: Consumer | None = None
            if link is not None:
                consumer = Consumer(
                    link.messages,
                    link.ack,
                    BatchWriter(sessions, incidents=incidents),
                    settings.ingest,
                    runtime.stats,
                    on_commands=commands.notify,
                )
                link_task = tg.create_task(link.run(), name="server.mqtt")
                consumer_task = tg.create_task(consumer.run(), name="server.ingest")
            try:
                yield runtime
            finally:
                sweeper.cancel()
                session_sweeper.cancel()
                for task in audit_tasks:
                    task.cancel()
                if access_sync is not None:
                    access_sync.cancel()
                if incident_sweeper is not None:
                    incident_sweeper.cancel()
                if rule_evaluator is not None:
                    rule_evaluator.cancel()
                if link is not None and consumer is not None:
                    consumer.stop()
                    await consumer_task  # the last batch is committed and acknowledged
                    await link.close()
                    await link_task  # disconnected
    finally:
        await engine.dispose()


def create_app(settings: ServerSettings, *, migrate: bool = True) -> FastAPI:
    server_clock.configure(server_clock.from_settings(settings.simulation))  # [simulation] (server/clock.py)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with start_runtime(settings, migrate=migrate) as runtime:
            app.state.runtime = runtime
            logger.info(
                "fleetcare server ready (database %s)",
                make_url(settings.database_url).render_as_string(hide_password=True),
            )
            yield
        logger.info("fleetcare server stopped")

    app = FastAPI(
        title="fleetcare server",
        version=__version__,
        description="Fleet API: devices, telemetry, events, commands, audit. Auth: `Authorization: Bearer <token>`.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.include_router(api_router())
    install_web(app)  # the web console at / and its /static files (server/web, docs/web.md)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.api.max_body_bytes)  # 413 above api.max_body_bytes
    return app
