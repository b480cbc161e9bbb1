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

from certs.authority import DEFAULT_LEAF_DAYS, init_pki, issue_device_cert, issue_server_cert
from certs.broker_config import PID_FILE_NAME, refresh_acl, write_mosquitto_config
from certs.errors import PkiError
from certs.reload import reload_broker
from certs.renewal import sign_csr
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


AclOption = Annotated[
    Path | None,
    typer.Option(
        "--acl",
        dir_okay=False,
        help="The broker's ACL file to update (default: <dir>/mosquitto/acl, when it exists).",
    ),
]
PidFileOption = Annotated[
    Path | None,
    typer.Option(
        "--broker-pid-file",
        dir_okay=False,
        help=f"Reload this Mosquitto (SIGHUP) afterwards (default: <dir>/mosquitto/{PID_FILE_NAME}, when it exists).",
    ),
]


def _apply_to_broker(pki: PkiDir, acl: Path | None, pid_file: Path | None) -> None:
    """Rewrite the broker's ACL from the PKI and reload the broker, saying what it did and, when
    it could not, what the operator must do: revocation only takes hold of live connections
    once the broker has re-read its ACL."""
    acl = acl if acl is not None else pki.broker_dir / "acl"
    if not acl.is_file():
        typer.secho(
            f"warning: no ACL file {acl}: connected clients keep their rights until the broker "
            "restarts; pass --acl with the file your broker uses",
            err=True,
            fg=typer.colors.YELLOW,
        )
        return
    change = refresh_acl(pki, acl)
    if change.added:
        typer.echo(f"{acl}: now denies {', '.join(sorted(change.added))}")
    if change.removed:
        typer.echo(f"{acl}: no longer denies {', '.join(sorted(change.removed))}")
    outcome = reload_broker(pid_file if pid_file is not None else pki.broker_dir / PID_FILE_NAME)
    if outcome.reloaded:
        typer.echo(outcome.detail)
    else:
        typer.secho(f"warning: broker not reloaded: {outcome.detail}", err=True, fg=typer.colors.YELLOW)


@app.command("revoke")
@_friendly_errors
def revoke_command(
    device_id: Annotated[str, typer.Argument(help="Device whose certificates to revoke.")],
    pki_dir: PkiDirOption = DEFAULT_DIR,
    acl: AclOption = None,
    broker_pid_file: PidFileOption = None,
) -> None:
    """Revoke every certificate issued to DEVICE_ID: the CRL refuses its new connections, the
    broker's ACL denies its live one everything, and the broker is reloaded (SIGHUP)."""
    pki = PkiDir(pki_dir)
    count = revoke_device(pki, device_id)
    typer.echo(f"revoked {count} certificate(s) of {device_id}; {pki.crl} updated")
    _apply_to_broker(pki, acl, broker_pid_file)


@app.command("server")
@_friendly_errors
def server_command(
    name: Annotated[str, typer.Argument(help="Process name: the CN becomes fleetcare-server-NAME.")],
    *,
    pki_dir: PkiDirOption = DEFAULT_DIR,
    days: Annotated[int, typer.Option("--days", min=1)] = DEFAULT_LEAF_DAYS,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing certificate.")] = False,
    acl: AclOption = None,
    broker_pid_file: PidFileOption = None,
) -> None:
    """Issue the MQTT certificate of one more fleet server process. The broker makes each
    certificate's CN its client id, so server processes connected at the same time (API replicas,
    ingest workers) each need their own; the ACL grants it the server's topics."""
    pki = PkiDir(pki_dir)
    identity, cert, key = issue_server_cert(pki, name, days=days, overwrite=overwrite)
    typer.echo(f"identity    {identity}")
    typer.echo(f"certificate {cert}")
    typer.echo(f"key         {key}")
    _apply_to_broker(pki, acl, broker_pid_file)


@app.command("renew")
@_friendly_errors
def renew_command(
    csr: Annotated[Path, typer.Argument(dir_okay=False, exists=True, help="The device's CSR (PEM).")],
    *,
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="Where to write the new certificate.")],
    pki_dir: PkiDirOption = DEFAULT_DIR,
    device: Annotated[
        str | None, typer.Option("--device", help="Refuse the request unless its CN is this device id.")
    ] = None,
    days: Annotated[int, typer.Option("--days", min=1)] = DEFAULT_LEAF_DAYS,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Renew a device's certificate from its certificate signing request: the private key never
    leaves the device, and its current certificate stays valid until it switches."""
    device_id, cert = sign_csr(
        PkiDir(pki_dir),
        csr.read_bytes(),
        expected_identity=device,
        days=days,
        cert_path=out,
        overwrite=overwrite,
    )
    typer.echo(
        f"renewed {device_id}: {out} (serial {cert.serial_number:x}, until {cert.not_valid_after_utc:%Y-%m-%d})"
    )


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
