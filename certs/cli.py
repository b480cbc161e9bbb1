"""``fleetcare certs ...``: create the fleet CA, provision and revoke devices, write the broker config.

Every command takes ``--dir`` (default: $FLEETCARE_PKI_DIR, else ./pki). A refused or failed
operation prints one ``error: ...`` line on stderr and exits with status 2.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from certs.authority import DEFAULT_LEAF_DAYS, init_pki, issue_device_cert
from certs.broker_config import write_mosquitto_config
from certs.errors import PkiError
from certs.revocation import refresh_crl, revoke_device
from certs.store import PkiDir

__all__ = ["app"]

app = typer.Typer(
    name="certs",
    help="Fleet PKI: CA, device certificates, revocation, Mosquitto configuration.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PkiDirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        envvar="FLEETCARE_PKI_DIR",
        help="PKI directory (default: $FLEETCARE_PKI_DIR, else ./pki).",
        file_okay=False,
    ),
]
DEFAULT_DIR = Path("pki")

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


def _friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn PkiError / OSError into one line on stderr and exit status 2, never a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except PkiError as exc:
            raise _fail(str(exc)) from exc
        except OSError as exc:
            raise _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from exc

    return wrapper


@app.command("init")
@_friendly_errors
def init_command(
    pki_dir: PkiDirOption = DEFAULT_DIR,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Extra broker host name or IP for its certificate (repeatable)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing CA and all it issued.")] = False,
) -> None:
    """Create the CA, broker and server certificates, command-signing key and an empty CRL."""
    pki = init_pki(pki_dir, hosts=host or (), force=force)
    typer.echo(f"initialised fleet PKI in {pki.root}")
    for label, path in (
        ("CA certificate", pki.ca_cert),
        ("broker certificate", pki.broker_cert),
        ("server client certificate", pki.server_client_cert),
        ("command-signing public key", pki.signing_pub),
        ("revocation list", pki.crl),
    ):
        typer.echo(f"  {label:<27} {path}")


@app.command("device")
@_friendly_errors
def device_command(
    device_id: Annotated[str, typer.Argument(help="Device id: 1-64 of A-Z a-z 0-9 . _ -")],
    pki_dir: PkiDirOption = DEFAULT_DIR,
    days: Annotated[int, typer.Option("--days", min=1, help="Validity in days.")] = DEFAULT_LEAF_DAYS,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing certificate (the old one stays valid).")
    ] = False,
) -> None:
    """Issue a device certificate and key (CN = DEVICE_ID) for provisioning."""
    cert, key = issue_device_cert(PkiDir(pki_dir), device_id, days=days, overwrite=overwrite)
    typer.echo(f"certificate {cert}")
    typer.echo(f"key         {key}")


@app.command("revoke")
@_friendly_errors
def revoke_command(
    device_id: Annotated[str, typer.Argument(help="Device whose certificates to revoke.")],
    pki_dir: PkiDirOption = DEFAULT_DIR,
) -> None:
    """Revoke every certificate issued to DEVICE_ID; then reload the broker (SIGHUP)."""
    pki = PkiDir(pki_dir)
    revoke_device(pki, device_id)
    typer.echo(f"revoked {device_id}; {pki.crl} updated. Reload the broker (SIGHUP) to apply it.")


@app.command("crl")
@_friendly_errors
def crl_command(pki_dir: PkiDirOption = DEFAULT_DIR) -> None:
    """Re-sign the revocation list with its current entries."""
    pki = PkiDir(pki_dir)
    refresh_crl(pki)
    typer.echo(f"re-signed {pki.crl}")


@app.command("broker-config")
@_friendly_errors
def broker_config_command(
    *,
    pki_dir: PkiDirOption = DEFAULT_DIR,
    out: Annotated[
        Path | None,
        typer.Option("--out", file_okay=False, help="Output directory (default: <dir>/mosquitto)."),
    ] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8883,
    bind: Annotated[str, typer.Option("--bind", help="Listen address; 0.0.0.0 for all.")] = "127.0.0.1",
    persistence_dir: Annotated[
        Path | None, typer.Option("--persistence-dir", file_okay=False, help="Enable persistence here.")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="Account mosquitto switches to when started as root.")
    ] = None,
    max_queued: Annotated[int, typer.Option("--max-queued", min=0)] = 100000,
) -> None:
    """Write mosquitto.conf and its ACL file for this PKI."""
    pki = PkiDir(pki_dir)
    for path in (pki.ca_cert, pki.broker_cert, pki.broker_key, pki.crl):
        if not path.exists():
            raise PkiError(f"{path} not found; run `fleetcare certs init --dir {pki_dir}` first")
    conf = write_mosquitto_config(
        pki,
        out if out is not None else pki_dir / "mosquitto",
        port=port,
        bind=bind,
        persistence_dir=persistence_dir,
        run_as_user=user,
        max_queued_messages=max_queued,
    )
    typer.echo(f"wrote {conf} and {conf.with_name('acl')}")
    typer.echo(f"run: mosquitto -c {conf}")


def main() -> None:
    """Run the certs CLI on its own (the fleetcare CLI mounts ``app`` as ``fleetcare certs``)."""
    app()


if __name__ == "__main__":
    main()
