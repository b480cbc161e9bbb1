"""The app factory. The lifespan owns the database engine (migrations first), the MQTT link,
the ingest task and the command sweeper; routes reach them through ``server.api.deps``.

Shutdown order: stop taking messages, flush the pending batch (commit), acknowledge it,
then disconnect from the broker, then close the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from fleetcare import __version__
from server import clock as server_clock
from server.anchors.anchorer import AuditAnchorer, sealer_job
from server.api import api_router
from server.api.body_limit import BodyLimit
from server.api.errors import install_error_handlers
from server.broker_access import AccessSync
from server.commands.service import CommandService
from server.db import create_engine, create_sessionmaker, run_migrations
from server.errors import ConfigError
from server.incidents import IncidentTracker
from server.ingest import BatchWriter, Consumer, IngestStats
from server.ingest.receipts import ReceiptSender
from server.maintenance.rules import rule_job
from server.mqtt import MqttLink
from server.periodic import Periodic
from server.runtime import Runtime
from server.sessions.service import SessionService
from server.settings import ServerSettings
from server.web import install_web

__all__ = ["build_jobs", "create_app", "load_signer", "start_runtime"]

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


def build_jobs(
    settings: ServerSettings,
    sessions: async_sessionmaker[AsyncSession],
    commands: CommandService,
    remote_sessions: SessionService,
    incidents: IncidentTracker | None,
    *,
    on_sealed: Callable[[], None] | None = None,
) -> list[Periodic]:
    """Every periodic job of the server, clocked ones first in the order a sweep runs them:
    incidents (states, evidence, KPI rollups), remote sessions (time limits, consent, queue),
    commands (timeouts, re-publishing); then the audit sealer, threshold rules and the broker's
    deny list."""
    jobs: list[Periodic] = []
    if incidents is not None:
        jobs.append(
            Periodic(
                "server.incidents.sweeper",
                settings.incidents.sweep_interval,
                lambda now: incidents.sweep_round(sessions, now),
                clocked=True,
            )
        )
    jobs.append(
        Periodic(
            "server.sessions.sweeper", settings.sessions.sweep_interval, remote_sessions.sweep, clocked=True
        )
    )
    jobs.append(
        Periodic("server.commands.sweeper", settings.command_sweep_interval, commands.sweep, clocked=True)
    )
    jobs.append(sealer_job(sessions, settings.auth.audit_seal_interval, on_sealed=on_sealed))
    if settings.maintenance.rule_interval > 0:
        jobs.append(
            rule_job(
                sessions, settings.maintenance.rule_interval, batch_size=settings.maintenance.rule_batch_size
            )
        )
    if settings.mqtt.enabled and settings.mqtt.broker_acl_file is not None:
        sync = AccessSync(
            sessions,
            settings.mqtt.broker_acl_file,
            settings.mqtt.broker_pid_file,
            interval=settings.mqtt.access_sync_interval,
        )
        jobs.append(sync.job())
    return jobs


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
        remote_sessions = SessionService(sessions, commands, settings.sessions)
        # incidents and state intervals: at ingest, plus a sweep (server/incidents)
        incidents = IncidentTracker(settings.incidents) if settings.incidents.enabled else None
        # the audit log: the sealer's job chains new entries, the anchorer signs the sealed head
        # outside the database (server/base/audit.py, server/anchors/)
        anchorer = AuditAnchorer.from_settings(settings, sessions)
        jobs = build_jobs(
            settings,
            sessions,
            commands,
            remote_sessions,
            incidents,
            on_sealed=anchorer.notify if anchorer else None,
        )
        runtime = Runtime(
            settings, engine, sessions, commands, IngestStats(), link, remote_sessions, incidents, jobs
        )
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(job.run(), name=job.name)
                for job in jobs
                if settings.jobs_in_real_time or not job.clocked
            ]
            if anchorer is not None:
                tasks.append(tg.create_task(anchorer.run(), name="server.audit.anchorer"))
            consumer: Consumer | None = None
            receipts: ReceiptSender | None = None
            if link is not None:
                if settings.ingest.receipts:  # delivery receipts to the agents
                    receipts = ReceiptSender(
                        link.publish_nowait, settings.ingest.receipt_interval, runtime.stats
                    )
                    tasks.append(tg.create_task(receipts.run(), name="server.ingest.receipts"))
                consumer = Consumer(
                    link.messages,
                    link.ack,
                    BatchWriter(sessions, incidents=incidents),
                    settings.ingest,
                    runtime.stats,
                    on_commands=commands.notify,
                    on_settled=receipts.add if receipts is not None else None,
                )
                link_task = tg.create_task(link.run(), name="server.mqtt")
                consumer_task = tg.create_task(consumer.run(), name="server.ingest")
            try:
                yield runtime
            finally:
                for task in tasks:
                    task.cancel()
                if link is not None and consumer is not None:
                    consumer.stop()
                    await consumer_task  # the last batch is committed and acknowledged
                    if receipts is not None:
                        receipts.flush()  # and confirmed
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
