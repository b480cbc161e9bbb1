"""``fleetcare demo``: the whole system on one machine, with production security.

    fleetcare demo [--devices 24] [--port 8000] [--workdir ./var/demo]

In the work directory: a fleet PKI (created once, reused afterwards), an embedded MQTT broker
with mutual TLS and the fleet ACL (Mosquitto if installed, else amqtt), the fleet server
(API, ingest, commands; SQLite in the work directory) on the API port, and a simulated fleet of
printers, each a real agent. Prints the web console's URL with the admin's password (new at
every start), the API's URL, an admin token and curl examples; both secrets are also in the
work directory (``admin.password``, ``admin.token``, mode 0600). Runs until Ctrl-C, then stops
the fleet (agents say goodbye), the server (last batch committed), the broker.

Programmatic use (tests): ``async with running_demo(DemoConfig(workdir=...)) as demo: ...``.
Guide: docs/demo.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shlex
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from fastapi import FastAPI

from certs.store import write_file
from server.app import create_app
from server.embedded_broker import EmbeddedBroker, EmbeddedBrokerError, Preference
from server.errors import ServerError
from server.local_stack import LocalStackError, admin_token, ensure_pki, serve_api
from server.settings import load_settings
from simulators.clock import ScaledClock
from simulators.demo_history import History, write_history, write_wear
from simulators.fleet import SimulatedFleet
from simulators.printer import PrinterOptions
from simulators.signals import stop_on_signals

__all__ = ["Demo", "DemoConfig", "DemoError", "app", "running_demo"]

logger = logging.getLogger(__name__)

ADMIN_USER = "admin"
_CONNECT_TIMEOUT = 60.0


class DemoError(LocalStackError):
    """The demo could not start."""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    workdir: Path
    devices: int = 24
    api_host: str = "127.0.0.1"
    api_port: int = 8000  # 0: any free port
    broker: Preference = "auto"
    broker_port: int = 0  # 0: any free port
    telemetry_interval: float = 10.0
    speed: float = 1.0
    jam_rate_per_hour: float = 0.5
    jam_self_clear_minutes: float | None = 20.0
    seed: int | None = None
    history_days: float = 30.0  # a month of business written at the first start (0: none)


@dataclass(frozen=True, slots=True)
class Demo:
    config: DemoConfig
    api_url: str
    token: str
    password: str  # the admin's, for the web console at api_url
    broker: EmbeddedBroker
    fleet: SimulatedFleet
    app: FastAPI
    history: History
    jammed: str | None  # the printer jammed at the start, for the clear-jam example

    @property
    def docs_url(self) -> str:
        return f"{self.api_url}/docs"

    def banner(self) -> str:
        broker = self.broker
        first = self.fleet.device_ids[0]
        auth = f"Authorization: Bearer {self.token}"
        devices = f"{self.api_url}/api/v1/devices"
        command = f"{self.api_url}/api/v1/devices/{first}/commands"
        ping = '{"action": "ping", "wait": true}'
        clear = '{"action": "printer.clear_jam", "wait": true}'
        jammed = self.jammed or first
        clear_url = f"{self.api_url}/api/v1/devices/{jammed}/commands"
        clear_title = (
            f"Clear the paper jam of {jammed} (jammed at the start; its customer clears it too, after a while):"
            if self.jammed
            else "Clear a paper jam (a device whose state is 'down'; on a running printer it fails honestly):"
        )
        sibling = Path(sys.executable).with_name("fleetcare")  # the virtualenv's command
        cli = str(sibling) if sibling.exists() else "fleetcare"
        log = f" (log {broker.log_path})" if broker.log_path else ""
        shared = "shared subscriptions" if broker.supports_shared_subscriptions else "no shared subscriptions"
        return "\n".join(
            [
                "",
                "fleetcare demo is running",
                f"  console      {self.api_url}/  (sign in as {ADMIN_USER}, password {self.password})",
                f"  API          {self.api_url}",
                f"  API docs     {self.docs_url}",
                f"  admin token  {self.token}",
                f"  broker       {broker.kind} on {broker.host}:{broker.port}, mutual TLS ({shared}){log}",
                f"  fleet        {len(self.fleet.device_ids)} simulated printers "
                f"({self.fleet.device_ids[0]} … {self.fleet.device_ids[-1]})",
                f"  work dir     {self.config.workdir}",
                f"  {self.history.line()}",
                "",
                "List the devices:",
                f"  curl -s -H {shlex.quote(auth)} {devices}",
                "",
                f"Ping {first} (waits for the device's answer):",
                f"  curl -s -X POST -H {shlex.quote(auth)} -H 'Content-Type: application/json' \\",
                f"       -d {shlex.quote(ping)} {command}",
                "",
                clear_title,
                f"  curl -s -X POST -H {shlex.quote(auth)} -H 'Content-Type: application/json' \\",
                f"       -d {shlex.quote(clear)} {clear_url}",
                "",
                "Or work it as a technician would, in a remote session with a report:",
                f"  export FLEETCARE_URL={self.api_url} FLEETCARE_TOKEN={self.token}",
                f"  {cli} session open {first} --reason 'demo'",
                f"  {cli} session run <session id> selftest",
                f"  {cli} session close <session id> --outcome 'checked' --fixed",
                f"  {cli} session report <session id> --markdown",
                "",
                "Ctrl-C stops everything.",
                "",
            ]
        )


def _jam_one(fleet: SimulatedFleet) -> str | None:
    """Jam one printer at the start (the last: the examples ping the first), so the printed
    clear-jam line has a jam to clear; the customer clears it too, after a while."""
    for device_id in reversed(fleet.device_ids):
        printer = fleet.printers.get(device_id)
        if printer is not None and printer.jam is None and printer.force_fault("PAPER_JAM"):
            return device_id
    return None


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):  # noqa: S104 - only for the printed URL
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def running_demo(config: DemoConfig) -> AsyncIterator[Demo]:
    """Broker, server and fleet running; torn down in reverse order on exit."""
    workdir = config.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    pki = await asyncio.to_thread(ensure_pki, workdir / "pki")
    async with EmbeddedBroker(
        pki, workdir / "broker", prefer=config.broker, port=config.broker_port
    ) as broker:
        try:
            settings = load_settings(
                None,
                database_url=f"sqlite+aiosqlite:///{workdir / 'fleetcare.db'}",
                signing_key_file=pki.signing_key,
                mqtt={
                    "host": broker.host,
                    "port": broker.port,
                    "ca_file": pki.ca_cert,
                    "cert_file": pki.server_client_cert,
                    "key_file": pki.server_client_key,
                    "client_id": "fleetcare-demo-server",
                    "shared_group": "fleetcare" if broker.supports_shared_subscriptions else None,
                    # revoked and retired devices denied on the broker, live (docs/pki.md)
                    **(
                        {"broker_acl_file": files[0], "broker_pid_file": files[1]}
                        if (files := broker.access_files) is not None
                        else {}
                    ),
                },
                # Device time is mapped onto the server's clock, so an equipment clock running
                # `speed` times faster shows its faults in real seconds: scale the windows too.
                incidents={
                    "fault_debounce": 60.0 / config.speed,
                    "offline_grace": 300.0 / config.speed,
                    "offline_flap_window": 300.0 / config.speed,
                    "sweep_interval": min(5.0, max(0.5, 5.0 / config.speed)),
                },
            )
        except ServerError as exc:
            raise DemoError(f"server settings: {exc}") from exc
        app = create_app(settings)
        async with serve_api(app, config.api_host, config.api_port) as api_port:
            password = secrets.token_urlsafe(12)  # 16 characters, a new one at every start
            token = await admin_token(app, ADMIN_USER, actor="demo", password=password)
            for name, secret in (("admin.token", token), ("admin.password", password)):
                write_file(workdir / name, f"{secret}\n".encode(), private=True, overwrite=True)
            fleet = SimulatedFleet(
                pki,
                broker.host,
                broker.port,
                config.devices,
                data_root=workdir / "agents",
                telemetry_interval=config.telemetry_interval,
                printer_options={
                    "jam_rate_per_hour": config.jam_rate_per_hour,
                    "jam_self_clear_minutes": config.jam_self_clear_minutes,
                },
                seed=config.seed,
                clock=ScaledClock(config.speed) if config.speed != 1.0 else None,
            )
            sessions = app.state.runtime.sessions
            started = datetime.now(UTC)
            history = History(0, 0, 0, 0, None)
            if config.history_days > 0:
                history = await write_history(
                    sessions,
                    fleet.device_ids,
                    now=started,
                    model=PrinterOptions().model,
                    days=config.history_days,
                    seed=config.seed or 1,
                )
            async with fleet:
                async with asyncio.timeout(_CONNECT_TIMEOUT):
                    await fleet.wait_connected()
                if config.history_days > 0:
                    await write_wear(sessions, fleet.printers, now=started, seed=config.seed or 1)
                jammed = _jam_one(fleet)
                yield Demo(
                    config=config,
                    api_url=f"http://{_url_host(config.api_host)}:{api_port}",
                    token=token,
                    password=password,
                    broker=broker,
                    fleet=fleet,
                    app=app,
                    history=history,
                    jammed=jammed,
                )


# -- CLI ---------------------------------------------------------------------------------------

app = typer.Typer(
    help="Run the whole system locally: broker, server, simulated fleet.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _quiet_libraries(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # amqtt and its state machines log every connection and state change at INFO.
    for name in ("amqtt", "transitions", "fleetcare.embedded_broker", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


async def _main(config: DemoConfig) -> None:
    with stop_on_signals() as stop:
        typer.echo(f"starting the demo in {config.workdir} …", err=True)
        async with running_demo(config) as demo:
            typer.echo(demo.banner())
            tty = sys.stderr.isatty()
            while not stop.is_set():
                if tty:
                    typer.echo(f"\r{demo.fleet.progress().line()}   ", err=True, nl=False)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
            typer.echo("\nstopping: fleet, then server, then broker …", err=True)
    typer.echo("demo stopped", err=True)


@app.callback(invoke_without_command=True)
def demo(
    *,
    devices: Annotated[int, typer.Option("--devices", "-n", min=1, help="Simulated printers.")] = 24,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="API port (0: any free port).")
    ] = 8000,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="PKI, database, broker and agent data live here.")
    ] = Path("var/demo"),
    host: Annotated[str, typer.Option("--host", help="API listen address.")] = "127.0.0.1",
    broker: Annotated[str, typer.Option("--broker", help="auto, mosquitto or amqtt.")] = "auto",
    broker_port: Annotated[
        int, typer.Option("--broker-port", min=0, max=65535, help="Broker port (0: any free port).")
    ] = 0,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Telemetry interval, seconds.")
    ] = 10.0,
    speed: Annotated[
        float, typer.Option("--speed", min=0.001, help="Equipment clock speed (60: a minute per second).")
    ] = 1.0,
    jam_rate: Annotated[
        float, typer.Option("--jam-rate", min=0.0, help="Paper jams per printer per (simulated) hour.")
    ] = 0.5,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed of the fleet.")] = None,
    history_days: Annotated[
        float,
        typer.Option(
            "--history-days",
            min=0.0,
            max=365.0,
            help="Days of business history written at the first start (0: none).",
        ),
    ] = 30.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what every part is doing.")] = False,
) -> None:
    """Run broker, server and a simulated fleet until Ctrl-C."""
    if broker not in ("auto", "mosquitto", "amqtt"):
        raise typer.BadParameter("expected auto, mosquitto or amqtt", param_hint="--broker")
    _quiet_libraries(verbose)
    config = DemoConfig(
        workdir=workdir,
        devices=devices,
        api_host=host,
        api_port=port,
        broker=broker,  # type: ignore[arg-type]
        broker_port=broker_port,
        telemetry_interval=interval,
        speed=speed,
        jam_rate_per_hour=jam_rate,
        seed=seed,
        history_days=history_days,
    )
    try:
        asyncio.run(_main(config))
    except (DemoError, EmbeddedBrokerError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except asyncio.CancelledError:  # a second Ctrl-C
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
