"""Fleet scale: how many simulated printers one process keeps connected over mutual TLS while each
publishes telemetry every 10 s, what each costs in memory, and whether the server's ingest keeps up.

Setting, all real and on this machine: a Mosquitto with mutual TLS; the fleet server in its own
process (``fleetcare server run``, SQLite by default); the fleet in a subprocess of its own — this
module's ``--child`` runner: one :class:`~simulators.fleet.SimulatedFleet` (real agent runtimes,
each with its own certificate, MQTT connection, database), reporting its progress, RSS and open
file descriptors as JSON lines.

For each step (default 1,000 → 2,000 → 5,000 devices) a fresh fleet starts (handshakes staggered
by ``--start-interval``), must be fully connected within the connect timeout, settles for one
telemetry interval, then is watched for ``--window`` seconds: messages the fleet had acknowledged
by the broker vs messages the server stored (plus duplicates) over the same window. The step
passes when every device connected, none failed, the fleet published at least 90 % of the
expected rate (devices ÷ interval: it did not fall behind itself) and the server's backlog grew by
less than 5 % of what was sent. The run stops at the first failing step.

Baselines in the same run: an idle ``python -c sleep`` and the runner after its imports with no
device (RSS); Mosquitto with no device (RSS, connections). Memory per device = (runner RSS -
runner RSS after imports) ÷ devices. Also per step: the runner's CPU per message sent (its CPU
seconds over the window ÷ messages) and its event-loop lag (how late its 1 s report timer fired,
p50 / max over the window). While the fleet starts, the runner moves its objects out of the cyclic
garbage collector's generations every second (``gc.freeze()``): full collections of millions of
long-lived objects stalled its event loop for seconds. The runner's warnings go to ``fleet-<n>.log``.

    python -m benchmarks.fleet_scale [--steps 1000,2000,5000] [--interval 10] [--window 60] [--db sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.command_latency import create_admin
from benchmarks.results import record
from certs import PkiDir, init_pki, issue_device_cert
from simulators.fleet import SimulatedFleet, device_ids
from simulators.signals import stop_on_signals
from tests.support.broker import MosquittoBroker
from tests.support.databases import sqlite_url, temporary_postgres_database
from tests.support.server import ServerProcess, server_settings

PREFIX = "scale"


def step_prefix(devices: int) -> str:
    """Each step has its own device ids: a fresh agent restarts its seq at 1, and the server
    would take a reused id's messages for redeliveries."""
    return f"{PREFIX}{devices}"


MIB = 1024 * 1024
KEEP_UP_TOLERANCE = 0.05  # backlog growth allowed, as a share of the messages sent in the window
PUBLISH_FLOOR = 0.90  # the fleet must publish at least this share of the expected rate


# -- the child: one process, one fleet ---------------------------------------------------------


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def child(args: argparse.Namespace) -> None:
    """The fleet runner: imports, reports its baseline, runs the fleet until SIGTERM."""
    # Warnings (links retrying, devices failing) to stderr: the parent keeps it as fleet-<n>.log.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    me = psutil.Process()
    _emit(phase="imported", rss=me.memory_info().rss, fds=me.num_fds())
    host, port = args.broker.rsplit(":", 1)
    fleet = SimulatedFleet(
        PkiDir(Path(args.pki)),
        host,
        int(port),
        args.devices,
        data_root=Path(args.data),
        prefix=args.prefix,
        telemetry_interval=args.interval,
        printer_options={"jam_rate_per_hour": 0.0},
        start_interval=args.start_interval,
    )
    loop = asyncio.get_running_loop()
    lag = 0.0
    grown = False
    with stop_on_signals() as stop:
        async with fleet:
            while not stop.is_set():
                progress = fleet.progress()
                if not grown:
                    # The fleet's millions of long-lived objects (agents, settings, connections)
                    # leave the cyclic collector's generations as they are made: each full
                    # collection of them stalled the loop (0.8 s at 1,000 devices, seconds at
                    # 5,000), again and again while the fleet grew. Later garbage is collected.
                    gc.freeze()
                    grown = progress.connected >= args.devices
                error = next((repr(e) for e in fleet.failures.values()), None)
                _emit(
                    phase="running",
                    connected=progress.connected,
                    started=progress.started,
                    sent=progress.sent,
                    failed=progress.failed,
                    rss=me.memory_info().rss,
                    fds=me.num_fds(),
                    lag=lag,
                    error=error,
                )
                # How late a 1 s timer fires: the event loop's backlog, the first sign of a
                # runner that cannot keep up.
                due = loop.time() + 1.0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(due):
                        await stop.wait()
                lag = max(0.0, loop.time() - due)


# -- the parent: broker, server, steps -------------------------------------------------------


@dataclass
class Fleet:
    """The runner subprocess and the latest line it reported."""

    proc: asyncio.subprocess.Process
    latest: dict[str, Any] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    lags: list[float] = field(default_factory=list)  # every report's event-loop lag, seconds

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                fields = json.loads(line)
                if fields.get("phase") == "imported":
                    self.base = fields
                else:
                    self.latest = fields
                    self.lags.append(float(fields.get("lag", 0.0)))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 120)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


async def start_fleet(
    args: argparse.Namespace, pki: PkiDir, broker: MosquittoBroker, devices: int, data: Path, log: Path
) -> Fleet:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.fleet_scale",
        "--child",
        "--devices",
        str(devices),
        "--pki",
        str(pki.root),
        "--broker",
        f"{broker.host}:{broker.port}",
        "--data",
        str(data),
        "--interval",
        str(args.interval),
        "--start-interval",
        str(args.start_interval),
        "--prefix",
        step_prefix(devices),
        stdout=asyncio.subprocess.PIPE,
        stderr=log.open("ab"),
        stdin=asyncio.subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLEETCARE_")},
    )
    fleet = Fleet(proc)
    fleet.reader = asyncio.create_task(fleet.read())
    return fleet


def broker_connections(pid: int, port: int) -> int:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def idle_python_rss() -> float:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(1.5)
        return float(psutil.Process(proc.pid).memory_info().rss)
    finally:
        proc.kill()
        proc.wait()


async def ingest_counted(client: httpx.AsyncClient) -> int:
    stats = (await client.get("/api/v1/ingest/stats")).json()
    return int(stats["stored"]) + int(stats["duplicates"])


async def online_at_server(client: httpx.AsyncClient) -> int:
    body = (await client.get("/api/v1/devices", params={"online": "true", "limit": 1})).json()
    return int(body.get("total", 0))


@dataclass
class StepResult:
    devices: int
    ok: bool
    reason: str
    connected: int = 0
    connect_s: float = 0.0
    rss: float = 0.0
    base_rss: float = 0.0
    fds: int = 0
    base_fds: int = 0
    fleet_cpu: float = 0.0
    server_cpu: float = 0.0
    broker_cpu: float = 0.0
    broker_conns: int = 0
    broker_rss: float = 0.0
    online: int = 0
    sent_rate: float = 0.0
    stored_rate: float = 0.0
    growth: int = 0
    sent: int = 0
    lag_p50: float = 0.0  # the runner's event-loop lag over the window, seconds
    lag_max: float = 0.0

    def row(self, interval: float) -> str:
        n = self.connected
        per_device = f"{(self.rss - self.base_rss) / n / 1024:.0f}" if n and self.rss else "—"
        fds = f"{(self.fds - self.base_fds) / n:.1f}" if n and self.fds else "—"
        expected = self.devices / interval
        # runner CPU per message sent: CPU % of one core x 10 ms / (messages per second)
        per_message = f"{self.fleet_cpu * 10 / self.sent_rate:.2f}" if self.sent_rate else "—"
        lag = f"{self.lag_p50 * 1000:.0f} / {self.lag_max * 1000:.0f}" if self.sent_rate else "—"
        return (
            f"| {self.devices:,} | {self.connected:,} | {self.online:,} | {self.connect_s:.0f} | "
            f"{self.rss / MIB:.0f} | {per_device} | {fds} | {self.fleet_cpu:.0f} | {per_message} | {lag} | "
            f"{self.broker_conns:,} | {self.broker_rss / MIB:.0f} | {self.server_cpu:.0f} | "
            f"{expected:.0f} | {self.sent_rate:.0f} | {self.stored_rate:.0f} | {self.growth:+,} | "
            f"{'ok' if self.ok else 'FAILED: ' + self.reason} |"
        )


def failed_at(result: StepResult, latest: dict[str, Any], broker_pid: int, port: int) -> StepResult:
    """What the runner and the broker showed when the step failed, and the runner's share of
    its file-descriptor limit (each agent holds a socket, a lock and its database)."""
    result.connected = int(latest.get("connected", 0))
    result.rss, result.fds = float(latest.get("rss", 0)), int(latest.get("fds", 0))
    result.broker_conns = broker_connections(broker_pid, port)
    result.broker_rss = float(psutil.Process(broker_pid).memory_info().rss)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    result.reason += f" (runner holds {result.fds:,} open files; limit {soft:,})"
    return result


async def run_step(
    args: argparse.Namespace,
    tmp: Path,
    pki: PkiDir,
    broker: MosquittoBroker,
    broker_pid: int,
    server_pid: int,
    client: httpx.AsyncClient,
    devices: int,
) -> StepResult:
    data = tmp / f"sim-{devices}"
    fleet = await start_fleet(args, pki, broker, devices, data, tmp / f"fleet-{devices}.log")
    result = StepResult(devices, ok=False, reason="")
    try:
        start = time.perf_counter()
        while not fleet.base:
            if fleet.proc.returncode is not None:
                result.reason = f"runner exited with {fleet.proc.returncode} (see fleet-{devices}.log)"
                return result
            await asyncio.sleep(0.1)
        result.base_rss, result.base_fds = float(fleet.base["rss"]), int(fleet.base["fds"])
        limit = devices * args.start_interval + args.connect_timeout
        while True:
            latest = fleet.latest
            connected = int(latest.get("connected", 0))
            print(
                f"\r{devices}: {latest.get('started', 0)} started, {connected} connected, "
                f"{latest.get('failed', 0)} failed, loop lag {float(latest.get('lag', 0)) * 1000:.0f} ms",
                end="",
                file=sys.stderr,
            )
            if latest.get("failed"):
                result.reason = f"{latest['failed']} devices failed: {latest.get('error')}"
                return failed_at(result, latest, broker_pid, broker.port)
            if connected >= devices:
                break
            if fleet.proc.returncode is not None or time.perf_counter() - start > limit:
                result.reason = f"only {connected:,} connected within {limit:.0f} s"
                return failed_at(result, latest, broker_pid, broker.port)
            await asyncio.sleep(0.5)
        result.connect_s = time.perf_counter() - start
        print(f"\n{devices}: all connected after {result.connect_s:.0f} s; settling", file=sys.stderr)
        await asyncio.sleep(args.interval + 5)  # the start-up burst (inventory, status) drains
        fleet_pid = fleet.proc.pid
        sent0, stored0 = int(fleet.latest["sent"]), await ingest_counted(client)
        cpu0 = (cpu_seconds(fleet_pid), cpu_seconds(server_pid), cpu_seconds(broker_pid))
        t0 = time.perf_counter()
        lag0 = len(fleet.lags)
        await asyncio.sleep(args.window)
        sent1, stored1 = int(fleet.latest["sent"]), await ingest_counted(client)
        lags = sorted(fleet.lags[lag0:]) or [0.0]
        result.lag_p50, result.lag_max = lags[len(lags) // 2], lags[-1]
        elapsed = time.perf_counter() - t0
        cpu1 = (cpu_seconds(fleet_pid), cpu_seconds(server_pid), cpu_seconds(broker_pid))
        latest = fleet.latest
        result.connected = int(latest["connected"])
        result.rss, result.fds = float(latest["rss"]), int(latest["fds"])
        result.fleet_cpu, result.server_cpu, result.broker_cpu = (
            100 * (after - before) / elapsed for before, after in zip(cpu0, cpu1, strict=True)
        )
        result.broker_conns = broker_connections(broker_pid, broker.port)
        result.broker_rss = float(psutil.Process(broker_pid).memory_info().rss)
        result.online = await online_at_server(client)
        result.sent = sent1 - sent0
        result.sent_rate = (sent1 - sent0) / elapsed
        result.stored_rate = (stored1 - stored0) / elapsed
        result.growth = (sent1 - sent0) - (stored1 - stored0)
        expected = devices / args.interval
        problems = []
        if result.connected < devices:
            problems.append(f"{devices - result.connected:,} disconnected during the window")
        if result.sent_rate < PUBLISH_FLOOR * expected:
            problems.append(f"fleet published {result.sent_rate:.0f}/s of {expected:.0f}/s expected")
        if result.growth > KEEP_UP_TOLERANCE * max(1, result.sent):
            problems.append(f"ingest backlog grew by {result.growth:,} messages")
        result.ok, result.reason = not problems, "; ".join(problems)
        return result
    finally:
        await fleet.stop()
        shutil.rmtree(data, ignore_errors=True)


async def measure(
    args: argparse.Namespace, tmp: Path, pki: PkiDir, db_url: str
) -> tuple[list[StepResult], str]:
    with MosquittoBroker(pki, tmp / "broker", persistence=False) as broker:
        assert broker._proc is not None  # the benchmark measures the broker process itself
        broker_pid = broker._proc.pid
        server = ServerProcess(
            server_settings(db_url, pki=pki, broker=broker, client_id="scale-server"),
            tmp / "server",
            start_timeout=60,
        )
        with server:
            assert server._proc is not None
            server_pid = server._proc.pid
            token = create_admin(server)
            baseline = (
                f"| baseline: idle `python -c sleep` | — | — | — | {idle_python_rss() / MIB:.0f} | — | — | — | — | — | "
                f"{broker_connections(broker_pid, broker.port)} | "
                f"{psutil.Process(broker_pid).memory_info().rss / MIB:.0f} | — | — | — | — | — | broker and server, no device |"
            )
            results: list[StepResult] = []
            async with httpx.AsyncClient(
                base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as client:
                for devices in args.steps:
                    step = await run_step(args, tmp, pki, broker, broker_pid, server_pid, client, devices)
                    print(f"\n{step.row(args.interval)}", file=sys.stderr)
                    results.append(step)
                    if not step.ok:
                        break
                    await asyncio.sleep(5)  # the broker forgets the last fleet's sessions
    return results, baseline


def ceiling(results: list[StepResult], soft_limit: int) -> str:
    """The device count at which the runner runs out of file descriptors, from a passed step."""
    passed = [r for r in results if r.ok and r.connected]
    if not passed:
        return ""
    step = passed[-1]
    per_device = (step.fds - step.base_fds) / step.connected
    most = (soft_limit - step.base_fds) / per_device
    return (
        f"Each device holds {per_device:.1f} file descriptors in the runner (its MQTT socket, a lock "
        f"file and its one SQLite database, `agent.sqlite3` with a rollback journal: no -wal/-shm), "
        f"so the open-files limit of {soft_limit:,} caps one process at about {most:,.0f} devices."
    )


async def parent(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="fc-scale-") as tmp_name:
        tmp = Path(tmp_name)
        pki = init_pki(tmp / "pki")
        print(f"issuing {sum(args.steps)} device certificates …", file=sys.stderr)
        for devices in args.steps:
            for device_id in device_ids(step_prefix(devices), devices):
                issue_device_cert(pki, device_id)
        if args.db == "sqlite":
            results, baseline = await measure(args, tmp, pki, sqlite_url(tmp / "scale.db"))
        else:
            with temporary_postgres_database("fc_scale") as url:
                results, baseline = await measure(args, tmp, pki, url)
        runner_base = results[0].base_rss / MIB if results else 0.0
    largest = max((r.devices for r in results if r.ok), default=0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    body = (
        f"Simulated printers (real agent runtimes, mutual TLS, each its own certificate and connection) "
        f"in ONE runner process, telemetry every {args.interval:g} s, handshakes {args.start_interval * 1000:g} ms "
        f"apart; server (`{args.db}`) and Mosquitto in their own processes; steady-state window "
        f"{args.window:g} s after all connected + one interval. File descriptors: soft limit {soft}, hard {hard}. "
        f"Runner RSS after imports, no device: {runner_base:.0f} MiB.\n\n"
        f"**Largest step kept: {largest:,} devices** (target 5,000). {ceiling(results, soft)}\n\n"
        "| devices | connected | online at server | connect s | runner RSS MiB | KiB per device | fds per device "
        "| runner CPU % | runner CPU ms/msg | loop lag ms p50 / max | broker conns | broker RSS MiB "
        "| server CPU % | expected msg/s | sent msg/s | stored msg/s | backlog growth | result |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | --- |\n" + baseline + "\n" + "\n".join(r.row(args.interval) for r in results)
    )
    print(body)
    if args.no_record:
        return
    record("benchmarks.fleet_scale", "Fleet scale: devices one process keeps connected", body)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=lambda v: [int(x) for x in v.split(",")], default=[1000, 2000, 5000])
    parser.add_argument("--interval", type=float, default=10.0, help="telemetry interval, seconds")
    parser.add_argument("--window", type=float, default=60.0, help="steady-state window, seconds")
    parser.add_argument("--start-interval", type=float, default=0.01, help="seconds between device starts")
    parser.add_argument("--connect-timeout", type=float, default=120.0, help="beyond the staggered start")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--no-record", action="store_true", help="print only (a trial run)")
    # the runner subprocess
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pki", default="", help=argparse.SUPPRESS)
    parser.add_argument("--broker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--data", default="", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=PREFIX, help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(child(args) if args.child else parent(args))


if __name__ == "__main__":
    main()
