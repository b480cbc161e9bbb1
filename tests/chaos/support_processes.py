"""Real processes for the process-kill chaos tests (tests/chaos/test_process_kills.py), and what
their databases say afterwards.

Test side:

    server = ChaosServer(settings, workdir, env={"FLEETCARE_SERVER_CRASH_POINT": "after_commit_before_ack"})
    server.start(until="exit")                  # returns once it is healthy or has died
    counts = await stored_counts(db_url, devices)   # distinct keys and every way of doubling

Child side, this file run as ``python -m tests.chaos.support_processes``:

    … agent CONFIG [--rate R]     a real agent (the CLI's settings and run_agent) whose one
                                  plugin emits events as fast as it can (R = 0) or R a second:
                                  the outbox is written all the time, so a SIGKILL lands in it
    … fleet OPTIONS               agents of a SimulatedFleet in one process, each publishing
                                  ``--rate`` messages a second (9 events to 1 telemetry) on a
                                  schedule this process keeps; every outbox write and broker
                                  acknowledgement is recorded and written to ``--report`` at
                                  exit (SIGUSR1: stop producing; SIGTERM: stop and report)

Both children are the real agent runtime and outbox; only the producer of messages is ours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from certs import PkiDir, write_mosquitto_config
from server.db import create_engine
from server.db.models import Event, Incident, Message, StatusRecord, TelemetrySample
from server.settings import ServerSettings
from tests.support.broker import MosquittoBroker
from tests.support.server import ServerProcess

__all__ = [
    "REPO",
    "ChaosServer",
    "FleetProcess",
    "FleetReport",
    "SteadyBroker",
    "StoredCounts",
    "child_env",
    "kill_broker",
    "steady_port",
    "stored_counts",
]

REPO = Path(__file__).resolve().parents[2]
CHAOS_EVENT = "chaos.tick"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any FLEETCARE_* variable (no crash point leaks into a child that
    was not asked for one), the repository on PYTHONPATH, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCARE_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


# -- the server as a process, with a crash point ----------------------------------------------


class ChaosServer(ServerProcess):
    """:class:`ServerProcess` with extra environment variables (a crash point) and a start that
    can also end in the process's death: a server that kills itself at its first batch may die
    before its health check ever answers."""

    def __init__(
        self, settings: ServerSettings, workdir: Path, *, env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(settings, workdir)
        self.env = dict(env or {})
        self.returncode: int | None = None

    def start(self, until: str = "healthy") -> None:
        """Start; return once healthy (MQTT connected), or with ``until="exit"`` once healthy or
        exited (its return code in :attr:`returncode`)."""
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=child_env(self.env),
                cwd=REPO,
            )
        self.returncode = None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if (code := self._proc.poll()) is not None:
                self.returncode = code
                if until == "exit":
                    return
                raise RuntimeError(f"server exited with {code}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                body = httpx.get(f"{self.base_url}/api/v1/health", timeout=1).json()
                if body.get("mqtt"):
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server not healthy after {self.start_timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def wait_exit(self, timeout: float) -> int:
        """The return code once the process has exited by itself (TimeoutError after ``timeout``)."""
        proc = self._proc
        if proc is None:
            if self.returncode is None:
                raise RuntimeError("server was never started")
            return self.returncode
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"server still running after {timeout}s:\n{self.log_tail()}") from None
        self.returncode = code
        self._proc = None
        return code


# -- what the server's database holds -----------------------------------------------------------


@dataclass
class StoredCounts:
    """Per device: the seqs in ``messages`` (the dedup table), and every derived row that could be
    written twice: events and status rows by seq, telemetry rows, incidents by fault code."""

    message_seqs: dict[str, set[int]] = field(default_factory=dict)
    message_rows: int = 0
    event_rows: dict[str, list[int]] = field(default_factory=dict)
    status_rows: dict[str, list[int]] = field(default_factory=dict)
    telemetry_rows: dict[str, int] = field(default_factory=dict)
    incidents: dict[tuple[str, str | None], int] = field(default_factory=dict)

    @property
    def stored(self) -> int:
        return sum(len(seqs) for seqs in self.message_seqs.values())

    def duplicate_rows(self) -> dict[str, int]:
        """Rows beyond one per (device, seq), by table (each table's unique key should make
        these impossible: counted anyway, that is the claim under test)."""
        return {
            "messages": self.message_rows - self.stored,
            "events": sum(len(v) - len(set(v)) for v in self.event_rows.values()),
            "status_history": sum(len(v) - len(set(v)) for v in self.status_rows.values()),
        }


async def stored_counts(db_url: str, devices: Sequence[str]) -> StoredCounts:
    """Read the counts of ``devices`` from the server's database (any backend, any process)."""
    engine = create_engine(db_url)
    counts = StoredCounts()
    try:
        async with engine.connect() as conn:
            for device in devices:
                seqs = list(await conn.scalars(select(Message.seq).where(Message.device_id == device)))
                counts.message_seqs[device] = set(seqs)
                counts.message_rows += len(seqs)
                counts.event_rows[device] = list(
                    await conn.scalars(select(Event.seq).where(Event.device_id == device))
                )
                counts.status_rows[device] = list(
                    await conn.scalars(select(StatusRecord.seq).where(StatusRecord.device_id == device))
                )
                counts.telemetry_rows[device] = (
                    await conn.scalar(
                        select(func.count())
                        .select_from(TelemetrySample)
                        .where(TelemetrySample.device_id == device)
                    )
                    or 0
                )
                rows = await conn.execute(
                    select(Incident.fault_code, func.count())
                    .where(Incident.device_id == device)
                    .group_by(Incident.fault_code)
                )
                for code, number in rows:
                    counts.incidents[(device, code)] = int(number)
    finally:
        await engine.dispose()
    return counts


# -- the fleet child's report --------------------------------------------------------------------


@dataclass
class FleetReport:
    """What one fleet process recorded: per device, every seq its outbox committed (with the
    message kind), every seq the broker acknowledged (and those acknowledged by the time of
    :meth:`FleetProcess.mark_acked`), every seq reserved for a last will, the samples of each
    telemetry message; the messages published again after a reconnection because the server had
    not confirmed them (agent/outbox.py); and the outbox depth and dropped telemetry at exit."""

    queued: dict[str, dict[int, str]]
    acked: dict[str, set[int]]
    wills: dict[str, set[int]]
    samples: dict[str, dict[int, int]]
    acked_at_mark: dict[str, set[int]]
    depth: dict[str, int]
    dropped: dict[str, int]
    produced: int
    producing_seconds: float
    requeued: int = 0

    @classmethod
    def load(cls, path: Path) -> FleetReport:
        data = json.loads(path.read_text())
        return cls(
            queued={d: {int(s): k for s, k in v.items()} for d, v in data["queued"].items()},
            acked={d: set(v) for d, v in data["acked"].items()},
            wills={d: set(v) for d, v in data["wills"].items()},
            samples={d: {int(s): n for s, n in v.items()} for d, v in data["samples"].items()},
            acked_at_mark={d: set(v) for d, v in data["acked_at_mark"].items()},
            depth=data["depth"],
            dropped=data["dropped"],
            produced=data["produced"],
            producing_seconds=data["producing_seconds"],
            requeued=data.get("requeued", 0),
        )


class FleetProcess:
    """One fleet child (see the module docstring), driven from the test."""

    def __init__(self, workdir: Path, args: Sequence[str]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.status_path = workdir / "status.json"
        self.report_path = workdir / "report.json"
        self.log_path = workdir / "fleet.log"
        argv = [*args, "--status", str(self.status_path), "--report", str(self.report_path)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.support_processes", "fleet", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=child_env(),
                cwd=REPO,
            )

    def status(self) -> dict[str, Any]:
        """The child's latest status (every 0.5 s): connected, queued, acked, depth, produced…"""
        if self.proc.poll() is not None and not self.report_path.exists():
            raise RuntimeError(f"fleet process exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            status: dict[str, Any] = json.loads(self.status_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return status

    def stop_producing(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def mark_acked(self) -> None:
        """Have the child note which seqs the broker has acknowledged so far (in the report's
        ``acked_at_mark``)."""
        self.proc.send_signal(signal.SIGUSR2)

    def stop(self, timeout: float = 60.0) -> FleetReport:
        """SIGTERM: every agent says goodbye; then the report."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        if code != 0:
            raise RuntimeError(f"fleet process exited with {code}:\n{self.log_tail()}")
        return FleetReport.load(self.report_path)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def steady_port(host: str = "127.0.0.1") -> int:
    """A free TCP port *below* the kernel's ephemeral range. While a broker is down, every
    reconnect attempt to its port takes an ephemeral local port, and one of them can be the
    broker's own (a TCP self-connect to 127.0.0.1) or another test's pick: the restarted broker
    then fails with "Address already in use". No connect() nor bind(0) ever lands down here."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for port in random.sample(range(max(1024, low - 12000), low), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below the ephemeral range ({low})")


class SteadyBroker(MosquittoBroker):
    """:class:`MosquittoBroker` on a :func:`steady_port`, so it can stay dead for a minute with
    clients knocking and still get its port back."""

    def __init__(self, pki: PkiDir, workdir: Path) -> None:
        super().__init__(pki, workdir)
        self.port = steady_port(self.host)
        self.conf_path = write_mosquitto_config(
            pki, workdir / "conf", port=self.port, bind=self.host, persistence_dir=workdir / "data"
        )


def kill_broker(broker: MosquittoBroker) -> None:
    """``kill -9`` the broker: no persistence save, no will, no DISCONNECT (MosquittoBroker's own
    ``stop`` is a SIGTERM, on which Mosquitto saves its database). ``broker.start()`` restarts it
    on the same port and persistence directory."""
    proc, broker._proc = broker._proc, None
    if proc is None or proc.poll() is not None:
        raise RuntimeError("the broker is not running")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


# -- child: an agent whose plugin floods its outbox ---------------------------------------------


class FloodPlugin:
    """Emits ``chaos.tick`` events, numbered, ``rate`` a second (0: back to back, yielding to the
    loop every few so the link and publisher still run)."""

    name = "flood"

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def equipment_info(self) -> Any:
        from protocol import EquipmentInfo  # noqa: PLC0415

        return EquipmentInfo(kind="test-rig", vendor="Acme", model="F-1", serial="SN-F", firmware="1.0")

    def read_metrics(self, now: datetime) -> Mapping[str, float]:
        return {"flood.rate": self.rate}

    def actions(self) -> Sequence[Any]:
        return []

    async def run(self, sink: Any) -> None:
        n = 0
        while True:
            if self.rate == 0:
                for _ in range(20):
                    sink.emit_event(CHAOS_EVENT, data={"n": n})
                    n += 1
                await asyncio.sleep(0)
            else:
                sink.emit_event(CHAOS_EVENT, data={"n": n})
                n += 1
                await asyncio.sleep(1 / self.rate)


def _agent_child(config: Path, rate: float) -> None:
    from agent.config import load_settings  # noqa: PLC0415
    from agent.runtime import run_agent  # noqa: PLC0415

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    plugins = [FloodPlugin(rate)] if rate >= 0 else []
    asyncio.run(run_agent(load_settings(config), plugins=plugins))


# -- child: a fleet publishing at a fixed total rate ---------------------------------------------


class _Recorder:
    """Every outbox write, acknowledgement and will reservation of this process, by device:
    recorded on the Outbox class (the fleet builds the outboxes; this process is only ours)."""

    def __init__(self) -> None:
        self.queued: dict[str, dict[int, str]] = defaultdict(dict)
        self.acked: dict[str, set[int]] = defaultdict(set)
        self.wills: dict[str, set[int]] = defaultdict(set)
        self.samples: dict[str, dict[int, int]] = defaultdict(dict)  # telemetry seq -> samples
        self.requeued = 0  # unconfirmed messages put back in the queue at reconnections

    def install(self) -> None:
        from agent.outbox import Outbox  # noqa: PLC0415
        from protocol import UpKind, decode  # noqa: PLC0415

        recorder = self
        append, ack, reserve, requeue = Outbox._append, Outbox.ack, Outbox.reserve_seq, Outbox.requeue

        def recording_append(outbox: Outbox, kind: Any, build: Any, **kwargs: Any) -> Any:
            entry = append(outbox, kind, build, **kwargs)
            if entry is not None:
                recorder.queued[outbox.device_id][entry.seq] = entry.kind.value
                if entry.kind is UpKind.TELEMETRY:
                    message = decode(UpKind.TELEMETRY, entry.payload)
                    recorder.samples[outbox.device_id][entry.seq] = len(getattr(message, "samples", ()))
            return entry

        def recording_ack(outbox: Outbox, *seqs: int) -> None:
            ack(outbox, *seqs)
            recorder.acked[outbox.device_id].update(seqs)

        def recording_reserve(outbox: Outbox) -> int:
            seq = reserve(outbox)
            recorder.wills[outbox.device_id].add(seq)
            return seq

        def recording_requeue(outbox: Outbox) -> int:
            moved = requeue(outbox)
            recorder.requeued += moved
            return moved

        Outbox._append = recording_append  # type: ignore[method-assign]
        Outbox.requeue = recording_requeue  # type: ignore[method-assign]
        Outbox.ack = recording_ack  # type: ignore[method-assign]
        Outbox.reserve_seq = recording_reserve  # type: ignore[method-assign]

    def totals(self) -> tuple[int, int]:
        return sum(len(v) for v in self.queued.values()), sum(len(v) for v in self.acked.values())


class QuietPlugin:
    """Equipment with one metric and nothing of its own to say: the producer speaks for it."""

    name = "quiet"

    def equipment_info(self) -> Any:
        from protocol import EquipmentInfo  # noqa: PLC0415

        return EquipmentInfo(kind="test-rig", vendor="Acme", model="Q-1", serial="SN-Q", firmware="1.0")

    def read_metrics(self, now: datetime) -> Mapping[str, float]:
        return {"quiet.level": 1.0}

    def actions(self) -> Sequence[Any]:
        return []

    async def run(self, sink: Any) -> None:
        return None


async def _fleet_child(args: argparse.Namespace) -> None:
    from agent.config import AgentSettings, ReconnectSettings  # noqa: PLC0415
    from agent.runtime import AgentRuntime  # noqa: PLC0415
    from certs import PkiDir  # noqa: PLC0415
    from simulators.fleet import Member, SimulatedFleet  # noqa: PLC0415

    recorder = _Recorder()
    recorder.install()
    members = [
        Member(f"{args.prefix}-{i:04d}", QuietPlugin()) for i in range(args.first, args.first + args.count)
    ]
    loop = asyncio.get_running_loop()
    producing = asyncio.Event()
    producing.set()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, producing.clear)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    # SIGUSR2, sent right after the broker was killed: what the broker had acknowledged by then
    acked_at_mark: dict[str, list[int]] = {}
    loop.add_signal_handler(
        signal.SIGUSR2, lambda: acked_at_mark.update({d: sorted(v) for d, v in recorder.acked.items()})
    )
    produced = 0
    started_at = time.monotonic()
    stopped_at: float | None = None

    def write_status(fleet: SimulatedFleet) -> None:
        queued, acked = recorder.totals()
        depth = 0
        for agent in fleet.agents.values():
            with contextlib.suppress(RuntimeError):
                depth += agent.outbox_depth()
        progress = fleet.progress()
        status = {
            "started": progress.started,
            "connected": progress.connected,
            "failed": progress.failed,
            "queued": queued,
            "acked": acked,
            "depth": depth,
            "produced": produced,
            "producing": producing.is_set(),
        }
        tmp = args.status.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        tmp.replace(args.status)

    def produce(agent: AgentRuntime, n: int) -> None:
        if n % 10 == 9:
            agent.uplink.telemetry(datetime.now().astimezone(), {"chaos.n": float(n)})
        else:
            agent.emit_event(CHAOS_EVENT, data={"n": n})

    class QuickFleet(SimulatedFleet):
        """Reconnect backoff scaled down (0.2 s to ``--reconnect-max``, 60 s by default): the
        outage is what is measured, not the jitter of a minute-long backoff after it."""

        def settings_for(self, device_id: str, index: int) -> AgentSettings:
            settings = super().settings_for(device_id, index)
            reconnect = ReconnectSettings(initial=0.2, max=args.reconnect_max)
            return settings.model_copy(update={"reconnect": reconnect})

    fleet = QuickFleet(
        PkiDir(args.pki),
        args.host,
        args.port,
        len(members),
        data_root=args.data_root,
        members=members,
        telemetry_interval=86400.0,
        shutdown_grace=5.0,
        start_interval=0.01,
    )
    async with fleet:
        await fleet.wait_connected()
        write_status(fleet)
        # Fixed schedule: device i's n-th message is due at n / rate (spread over the interval),
        # so a late loop catches up instead of lowering the rate.
        counts = dict.fromkeys(fleet.agents, 0)
        last_status = 0.0
        t0 = started_at = time.monotonic()
        while not stopping.is_set():
            now = time.monotonic()
            if producing.is_set():
                due = int((now - t0) * args.rate)
                for device, agent in fleet.agents.items():
                    while counts[device] < due:
                        try:
                            produce(agent, counts[device])
                        except RuntimeError:  # stopped meanwhile (never, unless it failed)
                            break
                        counts[device] += 1
                        produced += 1
            elif stopped_at is None:
                stopped_at = now
            if now - last_status >= 0.5:
                last_status = now
                write_status(fleet)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.02)
        depth = {d: a.outbox_depth() for d, a in fleet.agents.items()}
        dropped = {d: a.outbox.dropped_telemetry for d, a in fleet.agents.items()}
    # after every agent said goodbye and gave its queue shutdown_grace seconds
    for device in depth:
        from agent.outbox import read_stats  # noqa: PLC0415
        from agent.storage import database_path  # noqa: PLC0415

        stats = read_stats(database_path(args.data_root / device))
        if stats is not None:
            depth[device] = stats.depth
            dropped[device] = stats.dropped_telemetry
    report = {
        "queued": {d: {str(s): k for s, k in v.items()} for d, v in recorder.queued.items()},
        "acked": {d: sorted(v) for d, v in recorder.acked.items()},
        "wills": {d: sorted(v) for d, v in recorder.wills.items()},
        "samples": {d: {str(s): n for s, n in v.items()} for d, v in recorder.samples.items()},
        "acked_at_mark": acked_at_mark,
        "depth": depth,
        "dropped": dropped,
        "produced": produced,
        "producing_seconds": (stopped_at or time.monotonic()) - started_at,
        "requeued": recorder.requeued,
    }
    args.report.write_text(json.dumps(report))
    write_status(fleet)


def _fleet_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="support_processes fleet")
    parser.add_argument("--pki", type=Path, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="messages a second per device")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--reconnect-max", type=float, default=2.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
    commands: dict[str, Callable[[Sequence[str]], None]] = {
        "agent": lambda rest: _agent_child(Path(rest[0]), float(rest[1]) if len(rest) > 1 else 0.0),
        "fleet": lambda rest: asyncio.run(_fleet_child(_fleet_args(rest))),
    }
    if not argv or argv[0] not in commands:
        raise SystemExit(f"usage: python -m tests.chaos.support_processes {{{','.join(commands)}}} …")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
