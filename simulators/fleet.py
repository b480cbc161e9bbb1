"""N real agent runtimes with simulated printers, in one process, in one task group.

    async with SimulatedFleet(pki, "127.0.0.1", 8883, 100, data_root=Path("var/sim")) as fleet:
        await fleet.wait_connected()
        print(fleet.progress())

Each device gets a certificate from the fleet PKI (an existing one is reused), its own data
directory (outbox, replay cache) under ``data_root``, and settings built in code: mutual TLS to
the broker, the pinned command-signing key, no psutil metrics (thousands of agents in one
process would each measure the same machine), and a rollback-journal database without fsync
(``storage_journal="rollback"``, ``storage_sync="off"``: one open file per agent instead of
three, so the process's open-files limit is not what bounds the fleet; pass ``storage_journal``
/ ``storage_sync`` to change it), and CLI consent decisions looked for hourly
(``consent_poll_interval``: simulated operators decide in-process). Agents start a little apart
(``start_interval``, on the loop's clock) and at most ``max_connecting`` of them are connecting
at once, so a large fleet does not hit the broker — nor its own event loop — with every TLS
handshake at once. One agent failing (e.g. its certificate was revoked) is logged and counted;
the others go on.

Printers are the default; any equipment kind comes in through ``members`` (a :class:`Member`
per device: id, plugin, site, the actions its owner allows), as scenarios do
(``simulators/run.py``). ``command_clock`` (default: the wall clock) checks command validity:
an accelerated run whose server signs on simulated time passes the same simulated clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent.clock import Clock, SystemClock
from agent.config import DEFAULT_ALLOWED_ACTIONS, AgentSettings, BrokerSettings, PolicySettings, TlsSettings
from agent.link import LinkState
from agent.plugin import EquipmentPlugin
from agent.runtime import AgentRuntime
from agent.storage import JournalMode, SyncMode
from certs import PkiDir, issue_device_cert
from protocol import validate_device_id
from simulators.printer import PrinterPlugin

__all__ = ["PRINTER_ACTIONS", "FleetProgress", "Member", "SimulatedFleet", "device_ids"]

logger = logging.getLogger(__name__)

PRINTER_ACTIONS = ("printer.status", "printer.clear_jam")
CONSENT_POLL_INTERVAL = 3600.0
"""Simulated operators decide in-process (``runtime.consent``, announced at once): polling for a
CLI's decisions would be one database read per device every period, as many as telemetry."""
MAX_CONNECTING = 50
"""Started agents still connecting at most, by default (see ``SimulatedFleet._start_all``)."""
SITES = ("HQ floor 1", "HQ floor 2", "Warehouse", "Branch office North", "Branch office South")


def device_ids(prefix: str, count: int) -> list[str]:
    """``prefix-0001`` … ``prefix-<count>`` (at least four digits, so ids sort naturally)."""
    width = max(4, len(str(count)))
    return [validate_device_id(f"{prefix}-{i:0{width}d}") for i in range(1, count + 1)]


@dataclass(frozen=True, slots=True)
class Member:
    """One device of a mixed fleet: its id, its equipment plugin, its site and the actions its
    owner allows (exact names, so disruptive ones are enabled too)."""

    device_id: str
    plugin: EquipmentPlugin
    site: str = ""
    allowed_actions: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class FleetProgress:
    devices: int
    connected: int
    sent: int  # up-messages the broker acknowledged (or that a newer status superseded)
    failed: int
    started: int = 0  # agents whose runtime is up (connected or not)

    def line(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.connected}/{self.devices} devices connected, {self.sent} messages sent{failed}"


class SimulatedFleet:
    """Async context manager: on entry every agent is started (not necessarily connected yet);
    on exit every agent says goodbye and stops, then the task group is left."""

    def __init__(
        self,
        pki: PkiDir,
        broker_host: str,
        broker_port: int,
        count: int,
        *,
        data_root: Path,
        prefix: str = "sim-printer",
        telemetry_interval: float = 10.0,
        printer_options: Mapping[str, Any] | None = None,
        seed: int | None = None,
        clock: Clock | None = None,
        allowed_actions: Sequence[str] | None = None,
        start_interval: float = 0.01,
        shutdown_grace: float = 1.0,
        members: Sequence[Member] | None = None,
        command_clock: Clock | None = None,
        storage_journal: JournalMode = "rollback",
        storage_sync: SyncMode = "off",
        consent_poll_interval: float = CONSENT_POLL_INTERVAL,
        max_connecting: int = MAX_CONNECTING,
        connect_threads: int | None = MAX_CONNECTING,
    ) -> None:
        if members is not None:
            count = len(members)
        if count < 1:
            raise ValueError(f"a fleet needs at least one device, got {count}")
        self.pki = pki
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.members = {m.device_id: m for m in members or ()}
        self.device_ids = list(self.members) if members is not None else device_ids(prefix, count)
        self.data_root = Path(data_root)
        self.telemetry_interval = telemetry_interval
        self.printer_options = dict(printer_options or {})
        self.seed = seed
        self.clock: Clock = clock or SystemClock()
        self.command_clock: Clock = command_clock or SystemClock()
        self.allowed_actions = list(allowed_actions or (*DEFAULT_ALLOWED_ACTIONS, *PRINTER_ACTIONS))
        self.start_interval = start_interval
        self.shutdown_grace = shutdown_grace
        self.storage_journal: JournalMode = storage_journal
        self.storage_sync: SyncMode = storage_sync
        self.consent_poll_interval = consent_poll_interval
        if max_connecting < 1:
            raise ValueError(f"max_connecting must be at least 1, got {max_connecting}")
        self.max_connecting = max_connecting
        self.connect_threads = connect_threads  # None: leave the loop's default executor alone
        self._connecting = asyncio.Semaphore(max_connecting)
        self.agents: dict[str, AgentRuntime] = {}
        self.printers: dict[str, PrinterPlugin] = {}
        self.machines: dict[str, EquipmentPlugin] = {}  # every device's plugin, printers included
        self.failures: dict[str, BaseException] = {}
        self._base_seq: dict[str, int] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._starter: asyncio.Task[None] | None = None

    # -- building ----------------------------------------------------------------------------

    def _ensure_certificates(self) -> None:
        for device_id in self.device_ids:
            if not (self.pki.device_cert(device_id).exists() and self.pki.device_key(device_id).exists()):
                issue_device_cert(self.pki, device_id, overwrite=True)

    def settings_for(self, device_id: str, index: int) -> AgentSettings:
        member = self.members.get(device_id)
        allowed = [*DEFAULT_ALLOWED_ACTIONS, *member.allowed_actions] if member else self.allowed_actions
        return AgentSettings(
            device_id=device_id,
            broker=BrokerSettings(host=self.broker_host, port=self.broker_port),
            tls=TlsSettings(
                ca_file=self.pki.ca_cert,
                cert_file=self.pki.device_cert(device_id),
                key_file=self.pki.device_key(device_id),
            ),
            server_key_file=self.pki.signing_pub,
            data_dir=self.data_root / device_id,
            telemetry_interval=self.telemetry_interval,
            policy=PolicySettings(allowed_actions=allowed),
            site=member.site if member and member.site else SITES[index % len(SITES)],
            collect_system_metrics=False,
            shutdown_grace=self.shutdown_grace,
            storage_journal=self.storage_journal,
            storage_sync=self.storage_sync,
            consent_poll_interval=self.consent_poll_interval,
        )

    def _printer_for(self, device_id: str, index: int) -> PrinterPlugin:
        options = dict(self.printer_options)
        if self.seed is not None:
            options["seed"] = self.seed + index
        return PrinterPlugin(device_id, options, clock=self.clock)

    # -- running -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self.connect_threads is not None:
            # Each connection attempt holds a thread of the loop's default executor for its TCP
            # and TLS handshakes (aiomqtt runs paho's blocking connect there); the default pool
            # (cores + 4 threads) would make that the bottleneck of a large fleet's start-up.
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(max_workers=self.connect_threads, thread_name_prefix="fleet-connect")
            )
        await asyncio.to_thread(self._ensure_certificates)
        for index, device_id in enumerate(self.device_ids):
            member = self.members.get(device_id)
            machine: EquipmentPlugin
            if member is not None:
                machine = member.plugin
            else:
                machine = self.printers[device_id] = self._printer_for(device_id, index)
            if isinstance(machine, PrinterPlugin):
                self.printers[device_id] = machine
            self.machines[device_id] = machine
            self.agents[device_id] = AgentRuntime(
                self.settings_for(device_id, index),
                plugins=[machine],
                clock=self.clock,
                command_clock=self.command_clock,
            )
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._starter = self._tg.create_task(self._start_all(), name="fleet.starter")
        return self

    async def _start_all(self) -> None:
        """Agent *i* is due ``i * start_interval`` after the first, and starts once fewer than
        ``max_connecting`` started agents are still connecting. The schedule follows the loop's
        clock, not one sleep per agent (a busy loop stretches each sleep to a loop iteration);
        the admission limit keeps a start-up burst (TLS handshakes, inventories) from starving
        the loop, so connection attempts do not time out and retry in a spiral."""
        assert self._tg is not None
        loop = asyncio.get_running_loop()
        first = loop.time()
        for index, (device_id, agent) in enumerate(self.agents.items()):
            delay = first + index * self.start_interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._connecting.acquire()
            self._tg.create_task(self._run_agent(device_id, agent), name=f"fleet.agent[{device_id}]")

    async def _run_agent(self, device_id: str, agent: AgentRuntime) -> None:
        admitted = True  # holds one of the _connecting slots until connected (or gone)
        try:
            async with agent:
                self._base_seq[device_id] = agent.outbox.next_seq() - agent.outbox.depth()
                connected = asyncio.ensure_future(agent.wait_connected())
                stopped = asyncio.ensure_future(agent.wait_stopped())
                try:
                    await asyncio.wait({connected, stopped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self._connecting.release()
                    admitted = False
                    connected.cancel()
                    await asyncio.gather(connected, return_exceptions=True)  # a FatalLinkError is
                    # raised by the agent's own `async with`
                await stopped
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one device's failure must not stop the fleet
            self.failures[device_id] = exc
            logger.error("simulated device %s stopped: %s", device_id, exc)
        finally:
            if admitted:
                self._connecting.release()

    def stop(self) -> None:
        """Ask every agent to stop (idempotent; the context exit waits for them)."""
        if self._starter is not None:
            self._starter.cancel()
        for agent in self.agents.values():
            agent.stop()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        assert self._tg is not None
        tg, self._tg = self._tg, None
        await tg.__aexit__(exc_type, exc, tb)

    # -- observing ---------------------------------------------------------------------------

    async def wait_connected(self, count: int | None = None) -> None:
        """Until ``count`` agents (default: all) are connected; raise if too many failed."""
        target = len(self.agents) if count is None else count
        while True:
            connected = self.progress().connected
            if connected >= target:
                return
            if len(self.agents) - len(self.failures) < target:
                failed = ", ".join(f"{d}: {e}" for d, e in list(self.failures.items())[:3])
                raise RuntimeError(f"{len(self.failures)} simulated devices failed ({failed})")
            await asyncio.sleep(0.05)

    def progress(self) -> FleetProgress:
        connected = sent = 0
        for device_id, agent in self.agents.items():
            if agent.link_state is LinkState.CONNECTED:
                connected += 1
            base = self._base_seq.get(device_id)
            if base is not None:
                try:
                    outbox = agent.outbox
                    sent += max(0, outbox.next_seq() - outbox.depth() - base)
                except RuntimeError:  # stopped meanwhile
                    continue
        return FleetProgress(len(self.agents), connected, sent, len(self.failures), len(self._base_seq))
