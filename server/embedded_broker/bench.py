"""Throughput of the embedded brokers over mutual TLS: one publisher, one subscriber.

    python -m server.embedded_broker.bench [--kinds mosquitto,amqtt] [--messages 20000] [--size 200]

The broker runs in this process (amqtt) or as its child (Mosquitto); the publisher (a device
identity, on its own uplink) and the subscriber (the server identity, on ``fc/v1/d/+/up/#``)
each run in their own process with aiomqtt, as the agent and the server do. The publisher keeps
up to ``--window`` QoS 1 publishes in flight. The rate is messages received by the subscriber
divided by the time from the first publish to the last message received; QoS 0 messages the
broker drops under load count as lost, not as delivered. Not a test: results go to
docs/embedded-broker.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import shutil
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from certs import SERVER_IDENTITY, PkiDir, init_pki, issue_device_cert
from server.embedded_broker.broker import EmbeddedBroker, Preference

DEVICE = "bench-device"
DONE = b"__done__"


def _ctx(pki: PkiDir, identity: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    if identity == SERVER_IDENTITY:
        ctx.load_cert_chain(pki.server_client_cert, pki.server_client_key)
    else:
        ctx.load_cert_chain(pki.device_cert(identity), pki.device_key(identity))
    return ctx


async def _subscribe(root: str, port: int, ready: Any, out: Any) -> None:
    pki = PkiDir(Path(root))
    async with aiomqtt.Client(
        "localhost",
        port,
        identifier="bench-sub",
        tls_context=_ctx(pki, SERVER_IDENTITY),
        max_queued_incoming_messages=0,
    ) as client:
        await client.subscribe("fc/v1/d/+/up/#", qos=1)
        ready.set()
        count, first, last = 0, 0.0, 0.0
        async for message in client.messages:
            if message.payload == DONE:
                break
            count += 1
            last = time.perf_counter()
            if count == 1:
                first = last
        out.put((count, first, last))


@dataclass(frozen=True, slots=True)
class _Load:
    messages: int
    size: int
    qos: int
    window: int


async def _publish(root: str, port: int, load: _Load, out: Any, finished: Any) -> None:
    pki = PkiDir(Path(root))
    messages, size, qos, window = load.messages, load.size, load.qos, load.window
    payload = b"x" * size
    topic = f"fc/v1/d/{DEVICE}/up/telemetry"
    async with aiomqtt.Client(
        "localhost",
        port,
        identifier="bench-pub",
        tls_context=_ctx(pki, DEVICE),
        max_inflight_messages=window,
        max_queued_outgoing_messages=0,
    ) as client:
        client.pending_calls_threshold = messages + 1  # the window is intended, not a symptom
        start = time.perf_counter()
        if qos == 0:
            for i in range(messages):
                await client.publish(topic, payload, qos=0)
                if i % 200 == 0:
                    await asyncio.sleep(0)  # let the socket drain
        else:
            sem = asyncio.Semaphore(window)

            async def one() -> None:
                try:
                    await client.publish(topic, payload, qos=qos)
                finally:
                    sem.release()

            async with asyncio.TaskGroup() as tg:
                for _ in range(messages):
                    await sem.acquire()
                    tg.create_task(one())
        sent = time.perf_counter()
        await client.publish(topic, DONE, qos=1)
        out.put((start, sent))
        # Stay connected until the subscriber has everything (stock amqtt 0.12 drops what it
        # acknowledged but has not routed yet when the publisher disconnects).
        await asyncio.to_thread(finished.wait, 600)


def _quiet() -> None:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mqtt").setLevel(logging.ERROR)


def _run_subscriber(root: str, port: int, ready: Any, out: Any) -> None:
    _quiet()
    asyncio.run(_subscribe(root, port, ready, out))


def _run_publisher(root: str, port: int, load: _Load, out: Any, finished: Any) -> None:
    _quiet()
    asyncio.run(_publish(root, port, load, out, finished))


async def _measure(pki: PkiDir, workdir: Path, kind: Preference, qos: int, args: argparse.Namespace) -> str:
    ctx = mp.get_context("spawn")
    async with EmbeddedBroker(pki, workdir / kind, prefer=kind) as broker:
        ready, finished, sub_out, pub_out = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
        sub = ctx.Process(target=_run_subscriber, args=(str(pki.root), broker.port, ready, sub_out))
        sub.start()
        await asyncio.to_thread(ready.wait, 30)
        pub = ctx.Process(
            target=_run_publisher,
            args=(
                str(pki.root),
                broker.port,
                _Load(args.messages, args.size, qos, args.window),
                pub_out,
                finished,
            ),
        )
        pub.start()
        start, sent = await asyncio.to_thread(pub_out.get, True, 600)
        count, _first, last = await asyncio.to_thread(sub_out.get, True, 600)
        finished.set()
        await asyncio.to_thread(pub.join, 30)
        await asyncio.to_thread(sub.join, 30)
    elapsed = last - start
    rate = count / elapsed if elapsed > 0 else 0.0
    return (
        f"{broker.kind:9s} QoS {qos}: {count:6d}/{args.messages} delivered in {elapsed:6.2f} s "
        f"= {rate:8.0f} msg/s (publisher done after {sent - start:.2f} s)"
    )


def _tls_args(pki: PkiDir, identity: str) -> list[str]:
    if identity == SERVER_IDENTITY:
        cert, key = pki.server_client_cert, pki.server_client_key
    else:
        cert, key = pki.device_cert(identity), pki.device_key(identity)
    return ["--cafile", str(pki.ca_cert), "--cert", str(cert), "--key", str(key)]


async def _measure_c_clients(
    pki: PkiDir, workdir: Path, kind: Preference, qos: int, args: argparse.Namespace
) -> str:
    """The same measurement with Mosquitto's C clients, so the broker, not the client, is the limit."""
    lines = workdir / f"lines-{args.size}-{args.messages}.txt"
    if not lines.exists():
        lines.write_bytes((b"x" * args.size + b"\n") * args.messages)
    topic = f"fc/v1/d/{DEVICE}/up/telemetry"
    async with EmbeddedBroker(pki, workdir / f"c-{kind}", prefer=kind) as broker:
        common = ["-h", "localhost", "-p", str(broker.port), "-V", "mqttv311"]
        sub = await asyncio.create_subprocess_exec(
            "mosquitto_sub", *common, *_tls_args(pki, SERVER_IDENTITY), "-i", "bench-sub",
            "-t", "fc/v1/d/+/up/#", "-q", "1",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert sub.stdout is not None
        pub_base = ["mosquitto_pub", *common, *_tls_args(pki, DEVICE), "-t", topic]
        # Warm up until the subscription is in place: the first probe that comes back.
        while True:
            probe = await asyncio.create_subprocess_exec(*pub_base, "-q", "1", "-m", "probe")
            await probe.wait()
            try:
                line = await asyncio.wait_for(sub.stdout.readline(), 1.0)
            except TimeoutError:
                continue
            if line.strip() == b"probe":
                break
        start = time.perf_counter()
        # stdin stays open until everything arrived (stock amqtt 0.12 drops what it acknowledged
        # but has not routed yet when the publisher disconnects).
        pub = await asyncio.create_subprocess_exec(
            *pub_base, "-q", str(qos), "-M", str(args.window), "-l", "-i", "bench-pub",
            stdin=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert pub.stdin is not None
        pub.stdin.write(lines.read_bytes())
        count, last = 0, start
        while count < args.messages:
            try:
                line = await asyncio.wait_for(sub.stdout.readline(), 5.0)
            except TimeoutError:
                break  # QoS 0 messages the broker dropped will never come
            if not line:
                break
            if line.strip() != b"probe":
                count += 1
                last = time.perf_counter()
        pub.stdin.close()
        await pub.wait()
        sub.terminate()
        await sub.wait()
    elapsed = last - start
    rate = count / elapsed if elapsed > 0 else 0.0
    return (
        f"{broker.kind:9s} QoS {qos}: {count:6d}/{args.messages} delivered in {elapsed:6.2f} s "
        f"= {rate:8.0f} msg/s  [mosquitto_pub -l | mosquitto_sub]"
    )


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="fleetcare-bench-") as tmp:
        pki = init_pki(Path(tmp) / "pki")
        issue_device_cert(pki, DEVICE)
        for kind in args.kinds.split(","):
            for qos in (0, 1):
                if args.client in ("aiomqtt", "both"):
                    print(await _measure(pki, Path(tmp), kind, qos, args), flush=True)
                if args.client in ("mosquitto-clients", "both"):
                    result = await _measure_c_clients(pki, Path(tmp), kind, qos, args)
                    print(result, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kinds", default="mosquitto,amqtt")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=200, help="payload bytes")
    parser.add_argument("--window", type=int, default=100, help="QoS 1 publishes in flight")
    parser.add_argument(
        "--client",
        choices=["aiomqtt", "mosquitto-clients", "both"],
        default="both" if shutil.which("mosquitto_pub") else "aiomqtt",
        help="aiomqtt (what fleetcare uses) or Mosquitto's C clients (the broker is then the limit)",
    )
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {args.messages} messages of {args.size} bytes, TLS", flush=True)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
