"""``fleetcare server``: The hash-chained audit log and its anchors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from server.cli.common import (
    ConfigOption,
    app,
    fail,
    load,
    with_session,
)
from server.errors import ServerError

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    config: ConfigOption = None,
    anchors: Annotated[
        Path | None,
        typer.Option(
            "--anchors",
            help="Anchors file, or a server log holding fleetcare-audit-anchor lines "
            "(default: auth.audit_anchor_file, beside a SQLite database when unset).",
        ),
    ] = None,
    public_keys: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="Anchor public key (PEM, e.g. pki/signing.pub); repeat for older keys "
            "(default: the public half of the anchor key in the settings).",
        ),
    ] = None,
) -> None:
    """Seal pending entries, check the whole chain and compare it with the signed anchors of its
    head: exit 0 if intact, 1 naming the first bad entry, the anchor the chain no longer holds
    (truncated, rewritten) or a forged anchor."""
    import protocol  # noqa: PLC0415
    from server.anchors import anchor as audit_anchor  # noqa: PLC0415

    settings = load(config)
    source = anchors or audit_anchor.anchor_file(settings)
    try:
        if public_keys:
            keys = audit_anchor.load_public_keys(public_keys)
        else:
            key = audit_anchor.load_anchor_key(settings)
            keys = {protocol.key_id(key.public_key()): key.public_key()} if key is not None else {}
    except OSError as exc:
        raise fail(f"--public-key: cannot read {exc.filename}: {exc.strerror}") from exc
    except (protocol.InvalidKey, ServerError) as exc:
        raise fail(str(exc)) from exc

    async def work(session: AsyncSession) -> audit_anchor.AuditCheck:
        return await audit_anchor.verify_anchored(session, anchors=source, keys=keys)

    check = with_session(settings, work, create=False)
    summary, *rest = check.lines()
    typer.echo(summary, err=not check.ok)
    for line in rest:
        typer.echo(line, err=True)
    if not check.ok:
        raise typer.Exit(1)
