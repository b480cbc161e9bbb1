"""Command round trip with a fleet connected: API request → signed command → agent → result at the API.

Setting, all real and on this machine: a Mosquitto with mutual TLS; ``--devices`` simulated
printers, each a real agent runtime with its own certificate (``fleetcare sim run`` in a
subprocess); the fleet server in a subprocess (``fleetcare server run``, SQLite or PostgreSQL).
The client POSTs ``ping`` with ``wait=true`` to a random device and measures until the response
carries the final state — the technician's wait for one diagnostic.

Baseline in the same run: a bare MQTT round trip on the same broker while the same fleet is
connected — one client publishes to a device's command topic, a plain aiomqtt client holding
that device's certificate answers on its reply topic. The ratio p50(fleetcare) ÷ p50(bare)
is what signing, the database, the guard, the outbox and the API cost on top of the broker.

    python -m benchmarks.command_latency [--devices 1000] [--commands 300] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import httpx

from benchmarks.results import record
from certs import SERVER_IDENTITY, PkiDir, init_pki, issue_device_cert
from protocol import command_topic
from tests.support.broker import MosquittoBroker, tls_context
from tests.support.databases import sqlite_url, temporary_postgres_database
from tests.support.server import ServerProcess, server_settings
from transport.sockets import NO_DELAY  # as the agent and the server set it

PREFIX = "lat"
ECHO_DEVICE = "lat-echo"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, mean {statistics.fmean(ms):.1f} ms"


@contextlib.contextmanager
def simulated_fleet(
    pki: PkiDir, broker: MosquittoBroker, devices: int, data: Path
) -> Iterator[subprocess.Popen[bytes]]:
    log = (data.parent / "fleet.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetcare.cli",
            "sim",
            "run",
            "--devices",
            str(devices),
            "--pki",
            str(pki.root),
            "--broker",
            f"{broker.host}:{broker.port}",
            "--interval",
            "60",
            "--prefix",
            PREFIX,
            "--data",
            str(data),
            "--jam-rate",
            "0",
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLEETCARE_")},
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def bare_round_trips(broker: MosquittoBroker, pki: PkiDir, count: int) -> list[float]:
    """QoS 1 publish on a command topic, answered by a plain client with the device's identity."""
    reply_topic = f"fc/v1/d/{ECHO_DEVICE}/up/reply"
    latencies: list[float] = []
    async with (
        aiomqtt.Client(
            broker.host,
            broker.port,
            identifier="lat-bare-device",
            socket_options=NO_DELAY,
            tls_context=tls_context(pki, ECHO_DEVICE),
        ) as device,
        aiomqtt.Client(
            broker.host,
            broker.port,
            identifier="lat-bare-server",
            socket_options=NO_DELAY,
            tls_context=tls_context(pki, SERVER_IDENTITY),
        ) as server,
    ):
        await device.subscribe(command_topic(ECHO_DEVICE), qos=1)
        await server.subscribe(reply_topic, qos=1)

        async def echo() -> None:
            async for message in device.messages:
                if message.payload == b"stop":  # cancelling a task inside aiomqtt's iterator hangs
                    return
                await device.publish(reply_topic, message.payload, qos=1)

        async with asyncio.TaskGroup() as tg:
            echo_task = tg.create_task(echo())
            incoming = server.messages
            for i in range(count + 20):
                body = f"ping-{i}".encode()
                start = time.perf_counter()
                await server.publish(command_topic(ECHO_DEVICE), body, qos=1)
                async with asyncio.timeout(10):
                    async for message in incoming:
                        if message.payload == body:
                            break
                if i >= 20:  # warm-up
                    latencies.append(time.perf_counter() - start)
            await server.publish(command_topic(ECHO_DEVICE), b"stop", qos=1)
            await echo_task
    return latencies


def create_admin(server: ServerProcess) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "create-user",
            "bench-admin",
            "--role",
            "admin",
            "--config",
            str(server.config),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


async def wait_for_fleet(client: httpx.AsyncClient, devices: int, limit: float) -> float:
    start = time.perf_counter()
    deadline = start + limit
    while True:
        body = (await client.get("/api/v1/devices", params={"online": "true", "limit": 1})).json()
        online = int(body.get("total", 0))
        print(f"\r{online}/{devices} devices online at the server", end="", file=sys.stderr)
        if online >= devices:
            print(file=sys.stderr)
            return time.perf_counter() - start
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {online}/{devices} devices came online within {limit:.0f}s")
        await asyncio.sleep(1.0)


async def command_round_trips(
    client: httpx.AsyncClient, devices: int, count: int, concurrency: int, seed: int
) -> tuple[list[float], int]:
    rng = random.Random(seed)
    ids = [f"{PREFIX}-{i:0{max(4, len(str(devices)))}d}" for i in range(1, devices + 1)]
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for _ in range(count):
        queue.put_nowait(rng.choice(ids))

    async def worker() -> None:
        nonlocal failures
        while not queue.empty():
            device = queue.get_nowait()
            start = time.perf_counter()
            response = await client.post(
                f"/api/v1/devices/{device}/commands",
                json={"action": "ping", "wait": True, "timeout_s": 30},
            )
            elapsed = time.perf_counter() - start
            if response.status_code in (200, 201) and response.json().get("state") == "succeeded":
                latencies.append(elapsed)
            else:
                failures += 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    return latencies, failures


async def measure(args: argparse.Namespace, tmp: Path, backend: str, db_url: str) -> list[str]:
    pki = PkiDir(tmp / "pki")
    with (
        MosquittoBroker(pki, tmp / f"broker-{backend}") as broker,
        simulated_fleet(pki, broker, args.devices, tmp / f"sim-{backend}"),
    ):
        server = ServerProcess(
            server_settings(db_url, pki=pki, broker=broker, client_id=f"lat-{backend}"),
            tmp / f"server-{backend}",
            start_timeout=60,
        )
        with server:
            token = create_admin(server)
            async with httpx.AsyncClient(
                base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as client:
                ready = await wait_for_fleet(client, args.devices, limit=600)
                print(f"{args.devices} devices online after {ready:.0f}s", file=sys.stderr)
                bare = await bare_round_trips(broker, pki, args.commands)
                print(f"bare MQTT round trip: {summary(bare)}")
                await command_round_trips(client, args.devices, 20, 1, seed=1)  # warm-up
                sequential, failed_seq = await command_round_trips(
                    client, args.devices, args.commands, 1, seed=2
                )
                print(f"fleetcare, one at a time ({backend}): {summary(sequential)}; failed {failed_seq}")
                loaded, failed_par = await command_round_trips(
                    client, args.devices, args.commands, args.concurrency, seed=3
                )
                print(
                    f"fleetcare, {args.concurrency} in flight ({backend}): {summary(loaded)}; failed {failed_par}"
                )
    p50_bare = percentile(bare, 0.5)
    rows = []
    for label, values, failed in (
        ("one at a time", sequential, failed_seq),
        (f"{args.concurrency} in flight", loaded, failed_par),
    ):
        ms = [v * 1000 for v in values]
        rows.append(
            f"| {backend} | {label} | {len(values)} | {failed} | {percentile(ms, 0.5):.1f} | "
            f"{percentile(ms, 0.99):.1f} | {percentile(bare, 0.5) * 1000:.1f} / {percentile(bare, 0.99) * 1000:.1f} | "
            f"{percentile(values, 0.5) / p50_bare:.1f} |"
        )
    return rows


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="fc-lat-") as tmp_name:
        tmp = Path(tmp_name)
        pki = init_pki(tmp / "pki")
        print(f"issuing {args.devices} device certificates …", file=sys.stderr)
        for i in range(1, args.devices + 1):
            issue_device_cert(pki, f"{PREFIX}-{i:0{max(4, len(str(args.devices)))}d}")
        issue_device_cert(pki, ECHO_DEVICE)
        rows: list[str] = []
        backends = ["sqlite", "postgres"] if args.db == "both" else [args.db]
        for backend in backends:
            if backend == "sqlite":
                rows += await measure(args, tmp, backend, sqlite_url(tmp / "lat.db"))
            else:
                with temporary_postgres_database("fc_lat") as url:
                    rows += await measure(args, tmp, backend, url)
    body = (
        f"{args.devices} simulated printers connected (real agents, mutual TLS, one process); server in its own "
        f"process. `ping` with `wait=true` to a random device, {args.commands} commands per row; "
        "latency = client POST until the response with the final state. Bare MQTT = QoS 1 publish on a "
        "command topic answered by a plain client on the same broker, same fleet connected.\n\n"
        "| database | load | commands ok | failed | p50 ms | p99 ms | bare MQTT p50 / p99 ms | p50 ÷ bare p50 |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows)
    )
    print(body)
    record("benchmarks.command_latency", "Command round-trip latency with a connected fleet", body)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
