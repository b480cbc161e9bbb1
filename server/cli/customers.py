"""``fleetcare server``: Customers, sites and which device belongs where (docs/incidents.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from server.cli.common import (
    CLI_ACTOR,
    ConfigOption,
    app,
    fail,
    load,
    with_session,
)

# --- customers, sites, device assignment, state rebuilds (docs/incidents.md) --------------------

customer_app = typer.Typer(
    help="Customers: criticality, contract hours, cost per dispatch.", no_args_is_help=True
)
site_app = typer.Typer(help="A customer's sites.", no_args_is_help=True)
app.add_typer(customer_app, name="customer")
app.add_typer(site_app, name="site")

CriticalityOption = Annotated[
    int | None, typer.Option("--criticality", min=1, max=5, help="1 low ... 5 life-critical.")
]
HoursOption = Annotated[
    str | None,
    typer.Option(
        "--contract-hours",
        help='JSON, e.g. \'{"days": [0,1,2,3,4], "start": "08:00", "end": "18:00", "tz": "Europe/Berlin"}\'; "24x7" clears.',
    ),
]


def _contract_hours(raw: str) -> dict[str, Any] | None:
    import json  # noqa: PLC0415

    import pydantic  # noqa: PLC0415

    from server.api.service_schemas import ContractHours  # noqa: PLC0415

    if raw.strip().lower() == "24x7":
        return None
    try:
        return ContractHours.model_validate(json.loads(raw)).model_dump()
    except (ValueError, pydantic.ValidationError) as exc:
        raise fail(f"--contract-hours: {exc}") from exc


def _customer_line(customer: Any) -> str:
    hours = "24x7" if customer.contract_hours is None else customer.contract_hours
    return (
        f"{customer.id}\t{customer.name}\tcriticality={customer.criticality}\t"
        f"cost_per_dispatch={customer.cost_per_dispatch:g}\tcontract_hours={hours}"
    )


@customer_app.command("create")
def customer_create(
    name: Annotated[str, typer.Argument(help="Customer name (unique).")],
    criticality: CriticalityOption = 3,
    contract_hours: HoursOption = None,
    cost_per_dispatch: Annotated[float, typer.Option("--cost-per-dispatch", min=0.0)] = 0.0,
    config: ConfigOption = None,
) -> None:
    """Create a customer; prints its id and fields."""
    from server import customers  # noqa: PLC0415

    hours = _contract_hours(contract_hours) if contract_hours else None

    async def work(session: AsyncSession) -> str:
        customer = await customers.create_customer(
            session,
            name=name,
            criticality=criticality or 3,
            contract_hours=hours,
            cost_per_dispatch=cost_per_dispatch,
            actor=CLI_ACTOR,
        )
        return _customer_line(customer)

    typer.echo(with_session(load(config), work))


@customer_app.command("list")
def customer_list(config: ConfigOption = None) -> None:
    """Every customer, one per line."""
    from server import customers  # noqa: PLC0415

    async def work(session: AsyncSession) -> list[str]:
        rows, _ = await customers.list_customers(session, limit=1_000_000)
        return [_customer_line(row) for row in rows]

    for line in with_session(load(config), work, create=False):
        typer.echo(line)


@customer_app.command("update")
def customer_update(
    customer_id: Annotated[int, typer.Argument(help="Customer id.")],
    *,
    name: Annotated[str | None, typer.Option("--name")] = None,
    criticality: CriticalityOption = None,
    contract_hours: HoursOption = None,
    cost_per_dispatch: Annotated[float | None, typer.Option("--cost-per-dispatch", min=0.0)] = None,
    config: ConfigOption = None,
) -> None:
    """Change the fields given."""
    from server import customers  # noqa: PLC0415

    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if criticality is not None:
        changes["criticality"] = criticality
    if contract_hours is not None:
        changes["contract_hours"] = _contract_hours(contract_hours)
    if cost_per_dispatch is not None:
        changes["cost_per_dispatch"] = cost_per_dispatch
    if not changes:
        raise fail("nothing to change (give --name, --criticality, --contract-hours or --cost-per-dispatch)")

    async def work(session: AsyncSession) -> str:
        return _customer_line(await customers.update_customer(session, customer_id, changes, actor=CLI_ACTOR))

    typer.echo(with_session(load(config), work))


@site_app.command("create")
def site_create(
    customer_id: Annotated[int, typer.Argument(help="Customer id.")],
    name: Annotated[str, typer.Argument(help="Site name (unique per customer).")],
    criticality: CriticalityOption = None,
    attended: Annotated[
        bool, typer.Option("--attended", help="Every remote session needs a local operator's consent.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a site; devices that reported this site name are assigned to it."""
    from server import customers  # noqa: PLC0415

    async def work(session: AsyncSession) -> str:
        site = await customers.create_site(
            session, customer_id, name=name, criticality=criticality, attended=attended, actor=CLI_ACTOR
        )
        mode = "\tattended" if site.attended else ""
        return f"{site.id}\t{site.name}\tcustomer={site.customer_id}\tcriticality={site.criticality}{mode}"

    typer.echo(with_session(load(config), work))


@site_app.command("list")
def site_list(
    customer_id: Annotated[int, typer.Argument(help="Customer id.")], config: ConfigOption = None
) -> None:
    """A customer's sites, one per line."""
    from server import customers  # noqa: PLC0415

    async def work(session: AsyncSession) -> list[str]:
        rows, _ = await customers.list_sites(session, customer_id, limit=1_000_000)
        return [f"{s.id}\t{s.name}\tcustomer={s.customer_id}\tcriticality={s.criticality}" for s in rows]

    for line in with_session(load(config), work, create=False):
        typer.echo(line)


@app.command("assign-device")
def assign_device(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    *,
    customer: Annotated[int | None, typer.Option("--customer", help="Customer id (0 clears).")] = None,
    site: Annotated[
        int | None, typer.Option("--site", help="Site id; its customer follows (0 clears).")
    ] = None,
    criticality: Annotated[
        int | None, typer.Option("--criticality", min=0, max=5, help="1-5; 0 inherits the site's/customer's.")
    ] = None,
    decommissioned: Annotated[
        str | None, typer.Option("--decommissioned", help='ISO 8601 time, or "none" to clear.')
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Set a device's customer, site, criticality or decommissioning time."""
    from datetime import datetime  # noqa: PLC0415

    from server import customers  # noqa: PLC0415

    given: dict[str, Any] = {}
    if customer is not None:
        given["customer_id"] = customer or None
    if site is not None:
        given["site_id"] = site or None
    if criticality is not None:
        given["criticality"] = criticality or None
    if decommissioned is not None:
        if decommissioned.lower() == "none":
            given["decommissioned_at"] = None
        else:
            try:
                when = datetime.fromisoformat(decommissioned.replace("Z", "+00:00"))
            except ValueError as exc:
                raise fail(f"--decommissioned: {exc}") from exc
            if when.tzinfo is None:
                raise fail("--decommissioned: give a time zone (e.g. 2026-12-31T00:00:00Z)")
            given["decommissioned_at"] = when
    if not given:
        raise fail("nothing to change (give --customer, --site, --criticality or --decommissioned)")

    async def work(session: AsyncSession) -> str:
        device = await customers.assign_device(
            session, device_id, customers.DeviceAssignment(**given), actor=CLI_ACTOR
        )
        return (
            f"{device.id}\tcustomer={device.customer_id}\tsite={device.site_id}\t"
            f"criticality={device.criticality}\tdecommissioned_at={device.decommissioned_at}"
        )

    typer.echo(with_session(load(config), work))
