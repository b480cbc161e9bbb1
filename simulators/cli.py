"""``fleetcare sim``: run simulated fleets against a broker, or whole scenarios.

fleetcare sim run --devices 200 --pki ./pki --broker localhost:8883 --interval 10
fleetcare sim run --scenario hospital-imaging --days 30 --speed 5000      # broker, server, people
fleetcare sim compare --scenario hospital-imaging --days 30               # remote on vs off
fleetcare sim compare --scenario tiny-hospital --clock stepped --seed 3   # reproducible
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from certs import PkiDir
from simulators.clock import ScaledClock
from simulators.fleet import SimulatedFleet
from simulators.scenario import ScenarioError, load_scenario
from simulators.signals import stop_on_signals

if TYPE_CHECKING:  # simulators.run imports server.demo, which imports this module
    from simulators.run import Progress
    from simulators.scenario import Scenario

__all__ = ["app", "parse_broker"]

app = typer.Typer(
    help="Simulated equipment fleets.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main() -> None:
    """Simulated equipment fleets: real agents driving simulated printers."""


def parse_broker(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8883`` for IPv6); the port defaults to 8883."""
    host, port = value, 8883
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise typer.BadParameter(f"{value!r}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise typer.BadParameter(f"{value!r}: expected [host]:port")
            port = _port(rest[1:], value)
    elif value.count(":") == 1:
        host, text = value.split(":")
        port = _port(text, value)
    if not host:
        raise typer.BadParameter(f"{value!r}: empty host")
    return host, port


def _port(text: str, value: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise typer.BadParameter(f"{value!r}: port must be 1-65535")
    return int(text)


async def _run(fleet: SimulatedFleet, every: float) -> None:
    tty = sys.stderr.isatty()
    with stop_on_signals() as stop:
        async with fleet:
            while not stop.is_set():
                line = fleet.progress().line()
                typer.echo(f"\r{line}   " if tty else line, err=True, nl=not tty)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)
            typer.echo("\nstopping the fleet…" if tty else "stopping the fleet…", err=True)
    typer.echo(fleet.progress().line(), err=True)


@app.command()
def run(
    *,
    scenario: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            "-s",
            help="A shipped scenario (hospital-imaging, office-printers, plant-chillers, …) or a .toml "
            "path: runs broker, server, fleet and people on a simulated clock, then prints the KPIs.",
        ),
    ] = None,
    days: Annotated[float | None, typer.Option("--days", min=0.001, help="Scenario: simulated days.")] = None,
    clock: Annotated[str | None, _CLOCK] = None,
    tick: Annotated[float | None, _TICK] = None,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Scenario: PKI, database and agent data live here.")
    ] = Path("var/sim-run"),
    devices: Annotated[
        int, typer.Option("--devices", "-n", min=1, help="Number of simulated printers.")
    ] = 10,
    pki_dir: Annotated[
        Path, typer.Option("--pki", help="Fleet PKI directory (fleetcare certs init).")
    ] = Path("pki"),
    broker: Annotated[
        str, typer.Option("--broker", help="Broker host:port (mutual TLS).")
    ] = "localhost:8883",
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Telemetry interval, seconds.")
    ] = 10.0,
    prefix: Annotated[str, typer.Option("--prefix", help="Device id prefix.")] = "sim-printer",
    data_root: Annotated[Path, typer.Option("--data", help="Where the agents keep their outboxes.")] = Path(
        "var/sim"
    ),
    speed: Annotated[
        float, typer.Option("--speed", min=0.001, help="Equipment clock speed (60: a minute per second).")
    ] = 1.0,
    jam_rate: Annotated[
        float, typer.Option("--jam-rate", min=0.0, help="Paper jams per printer per (simulated) hour.")
    ] = 0.1,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Base random seed (device i gets seed+i).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log the agents' activity.")] = False,
) -> None:
    """Run DEVICES simulated printers, each a real agent, until Ctrl-C — or, with --scenario, a
    whole accelerated scenario to its end."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if scenario is not None:
        _quiet(verbose)
        loaded = _load(
            scenario,
            days=days,
            speed=speed if speed != 1.0 else None,
            seed=seed,
            clock=_clock(clock),
            tick_seconds=tick,
        )
        _scenario_main(_run_scenario(loaded, workdir))
        return
    pki = PkiDir(pki_dir)
    for path in (pki.ca_cert, pki.ca_key, pki.signing_pub):
        if not path.exists():
            typer.echo(f"error: {path} not found: create the PKI first (fleetcare certs init)", err=True)
            raise typer.Exit(2)
    host, port = parse_broker(broker)
    fleet = SimulatedFleet(
        pki,
        host,
        port,
        devices,
        prefix=prefix,
        data_root=data_root,
        telemetry_interval=interval,
        printer_options={"jam_rate_per_hour": jam_rate},
        seed=seed,
        clock=ScaledClock(speed) if speed != 1.0 else None,
    )
    typer.echo(f"starting {devices} simulated printers against {host}:{port} (Ctrl-C to stop)", err=True)
    try:
        asyncio.run(_run(fleet, every=1.0))
    except asyncio.CancelledError:  # a second Ctrl-C
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


# -- fleetcare sim run --scenario / fleetcare sim compare (simulators/run.py, compare.py) -----------


def _quiet(verbose: bool) -> None:
    for name in ("amqtt", "transitions", "fleetcare.embedded_broker", "uvicorn.error", "agent", "server"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)


_CLOCK = typer.Option(
    "--clock",
    help="Scenario: 'stepped' (reproducible: the same seed gives the same run, as fast as it computes) "
    "or 'anchored' (simulated time = wall clock x speed). Default: the scenario's.",
)
_TICK = typer.Option(
    "--tick", min=0.001, help="Scenario: equipment step in simulated seconds (default: the scenario's)."
)


def _clock(value: str | None) -> str | None:
    if value is not None and value not in ("stepped", "anchored"):
        typer.echo(f"error: --clock must be 'stepped' or 'anchored', not {value!r}", err=True)
        raise typer.Exit(2)
    return value


def _load(name: str, **overrides: float | int | str | None) -> Scenario:
    try:
        return load_scenario(name).with_overrides(**overrides)
    except ScenarioError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _progress_every(scenario: Scenario) -> float:
    """Real seconds between progress lines. A line reads every resolved incident through the
    API; in a stepped run that time is not spent simulating, so look less often."""
    return 5.0 if scenario.clock == "stepped" else 1.0


def _show(prefix: str) -> Callable[[Progress], None]:
    tty = sys.stderr.isatty()

    def show(progress: Progress) -> None:
        text = f"{prefix}{progress.line()}"
        typer.echo(f"\r{text}   " if tty else text, err=True, nl=not tty)

    return show


async def _run_scenario(scenario: Scenario, workdir: Path) -> None:
    from simulators.run import run_scenario  # noqa: PLC0415 - lazy: only this command needs the server

    pace = "stepped clock" if scenario.clock == "stepped" else f"{scenario.speed:g}x"
    typer.echo(f"running {scenario.name}: {scenario.days:g} simulated days, {pace} …", err=True)
    result = await run_scenario(
        scenario, workdir, on_progress=_show(""), progress_every=_progress_every(scenario)
    )
    typer.echo("", err=True)
    typer.echo(result.summary())


async def _compare(scenario: Scenario, workdir: Path) -> None:
    from simulators.compare import compare_scenario  # noqa: PLC0415 - lazy: only this command needs the server

    shows = {"remote": _show("remote    "), "baseline": _show("baseline  ")}
    comparison = await compare_scenario(
        scenario,
        workdir,
        on_progress=lambda label, p: shows[label](p),
        progress_every=_progress_every(scenario),
    )
    typer.echo("", err=True)
    typer.echo(comparison.table())


def _scenario_main(main: Coroutine[Any, Any, None]) -> None:
    from server.embedded_broker import EmbeddedBrokerError  # noqa: PLC0415 - lazy: only this command needs the server
    from simulators.run import RunError  # noqa: PLC0415 - lazy: only this command needs the server

    try:
        asyncio.run(main)
    except (RunError, ScenarioError, EmbeddedBrokerError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


@app.command()
def compare(
    *,
    scenario: Annotated[str, typer.Option("--scenario", "-s", help="A shipped scenario or a .toml path.")],
    days: Annotated[float | None, typer.Option("--days", min=0.001, help="Simulated days.")] = None,
    speed: Annotated[float | None, typer.Option("--speed", min=0.001, help="Clock speed.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (both runs).")] = None,
    clock: Annotated[str | None, _CLOCK] = None,
    tick: Annotated[float | None, _TICK] = None,
    workdir: Annotated[Path, typer.Option("--workdir", help="Where both runs keep their data.")] = Path(
        "var/sim-compare"
    ),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every part's activity.")] = False,
) -> None:
    """Run SCENARIO twice with the same seed — remote maintenance on, then off (every incident
    that does not clear by itself gets a dispatch) — and print the KPIs side by side."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    _quiet(verbose)
    loaded = _load(scenario, days=days, speed=speed, seed=seed, clock=_clock(clock), tick_seconds=tick)
    _scenario_main(_compare(loaded, workdir))


# -- fleetcare sim replay (simulators/replay.py) -----------------------------------------------
# (imports here, so this command stays one appended block)
import typing  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import httpx  # noqa: E402

from simulators import replay  # noqa: E402


def _when(value: str) -> datetime:
    """ISO 8601 with a timezone; a time without one is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r}: expected ISO 8601, e.g. 2026-11-21T05:00:00Z") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _replay(
    *,
    device_id: str,
    since: datetime,
    until: datetime,
    url: str,
    token: str,
    replica_args: dict[str, typing.Any],
    hold: bool,
) -> None:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
    ) as client:
        recording = await replay.fetch_recording(client, device_id, since, until)
    replica = replay.Replica(recording, **replica_args)
    plan = replica.plan
    typer.echo(
        f"replaying {device_id} ({recording.kind} {recording.model}) into {replica.replica_id}: "
        f"{plan.count(replay.StepKind.RAISE)} faults raised, {plan.count(replay.StepKind.CLEAR)} cleared, "
        f"{plan.count(replay.StepKind.METRICS)} telemetry instants over {plan.duration:,.0f} s of device "
        f"time ({plan.duration / replica_args['speed']:,.0f} s at speed {replica_args['speed']:g})"
        + (f"; {plan.skipped_clears} recorded clearings left to you" if plan.skipped_clears else ""),
        err=True,
    )
    tty = sys.stderr.isatty()
    with stop_on_signals() as stop:
        async with replica:
            done = asyncio.create_task(replica.wait_replayed())
            stopping = asyncio.create_task(stop.wait())
            try:
                while not stop.is_set() and not done.done():
                    line = replica.progress().line() + ("" if replica.connected else " (connecting…)")
                    typer.echo(f"\r{line}   " if tty else line, err=True, nl=not tty)
                    await asyncio.wait({done, stopping}, timeout=1.0)
            finally:
                done.cancel()
                stopping.cancel()
            if not stop.is_set():
                typer.echo(f"\n{replica.progress().line()}" if tty else replica.progress().line(), err=True)
                if hold:
                    typer.echo(
                        f"replay done; {replica.replica_id} stays online for fixes (Ctrl-C to stop)", err=True
                    )
                    await stop.wait()


@app.command("replay")
def replay_command(
    device_id: Annotated[str, typer.Argument(help="The recorded device.")],
    *,
    since: Annotated[str, typer.Option("--from", help="Window start, ISO 8601 (UTC when no zone is given).")],
    until: Annotated[str, typer.Option("--to", help="Window end (exclusive).")],
    url: Annotated[
        str, typer.Option("--url", envvar="FLEETCARE_URL", help="Server base URL.")
    ] = "http://localhost:8080",
    token: Annotated[str, typer.Option("--token", envvar="FLEETCARE_TOKEN", help="API token.")] = "",
    speed: Annotated[
        float, typer.Option("--speed", min=0.001, help="Replay speed (60: a recorded minute per second).")
    ] = 1.0,
    keep_faults: Annotated[
        bool, typer.Option("--keep-faults", help="Skip the recorded clearings: only a fix clears a fault.")
    ] = False,
    hold: Annotated[
        bool, typer.Option("--hold/--exit", help="After the replay, keep the replica online for fixes.")
    ] = True,
    pki_dir: Annotated[
        Path, typer.Option("--pki", help="Fleet PKI directory (issues the replica's certificate).")
    ] = Path("pki"),
    broker: Annotated[
        str, typer.Option("--broker", help="Broker host:port (mutual TLS).")
    ] = "localhost:8883",
    data_root: Annotated[Path, typer.Option("--data", help="Where the replica keeps its outbox.")] = Path(
        "var/replay"
    ),
) -> None:
    """Replay DEVICE_ID's recorded faults, state and telemetry into DEVICE_ID-replica."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not token:
        typer.echo("error: no API token: pass --token or set FLEETCARE_TOKEN", err=True)
        raise typer.Exit(2)
    pki = PkiDir(pki_dir)
    for path in (pki.ca_cert, pki.ca_key, pki.signing_pub):
        if not path.exists():
            typer.echo(
                f"error: {path} not found: point --pki at the fleet PKI (fleetcare certs init)", err=True
            )
            raise typer.Exit(2)
    host, port = parse_broker(broker)
    replica_args: dict[str, typing.Any] = {
        "pki": pki,
        "broker_host": host,
        "broker_port": port,
        "data_root": data_root,
        "speed": speed,
        "keep_faults": keep_faults,
    }
    try:
        asyncio.run(
            _replay(
                device_id=device_id,
                since=_when(since),
                until=_when(until),
                url=url.rstrip("/"),
                token=token,
                replica_args=replica_args,
                hold=hold,
            )
        )
    except replay.ReplayError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except asyncio.CancelledError:  # a second Ctrl-C
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
