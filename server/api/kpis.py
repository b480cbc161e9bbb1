"""Downtime and service KPIs (read: admin, ops, technician, customer), with every definition.
A customer's report is always for their own customer; a technician's for one assigned customer.

``GET /kpis?from=&to=&group_by=&customer=&site=&model=&fault_code=&format=json|csv`` and
``GET /kpis/definitions``. Formulas: docs/kpis.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from server.api.deps import CurrentUser, RuntimeDep, SessionDep, require_role
from server.api.download import content_disposition
from server.api.params import Id
from server.base.report_scope import report_customer
from server.base.users import Principal
from server.db.models import Role
from server.errors import InvalidInput
from server.kpi import GroupBy, ReportSpec, compute_report
from server.kpi.definitions import COLUMNS, definitions_dict
from server.kpi.export import check_period, parse_time, report_csv, report_json

__all__ = [
    "KpiDefinitionPublic",
    "KpiDefinitionsPublic",
    "KpiPeriodPublic",
    "KpiReportPublic",
    "KpiRowPublic",
    "router",
]

router = APIRouter(prefix="/kpis", tags=["kpis"])

Reader = Annotated[Principal, require_role(Role.OPS, Role.TECHNICIAN, Role.CUSTOMER)]
_GROUPS = ", ".join(g.value for g in GroupBy)


class KpiDefinitionPublic(BaseModel):
    label: str
    unit: str  # count, seconds, ratio, money, bool
    definition: str


class KpiDefinitionsPublic(BaseModel):
    columns: list[str]
    definitions: dict[str, KpiDefinitionPublic]


class KpiGroupPublic(BaseModel):
    by: str | None
    key: int | str | None
    label: str


class KpiRowPublic(BaseModel):
    group: KpiGroupPublic
    from_: str = Field(alias="from")
    to: str
    kpis: dict[str, bool | int | float | None]  # every column of `columns`; null: no value


class KpiPeriodPublic(BaseModel):
    from_: str = Field(alias="from")
    to: str
    until: str  # where the report stops: min(to, as_of)
    as_of: str


class KpiReportPublic(BaseModel):
    period: KpiPeriodPublic
    group_by: str | None
    filters: dict[str, int | str]
    columns: list[str]
    rows: list[KpiRowPublic]
    definitions: dict[str, KpiDefinitionPublic] | None = None  # null with definitions=false


def _group_by(value: str | None) -> GroupBy | None:
    if value is None or value == "":
        return None
    try:
        return GroupBy(value)
    except ValueError:
        raise InvalidInput(f"group_by: {value!r} is not one of {_GROUPS}", field="group_by") from None


@router.get(
    "",
    response_model=KpiReportPublic,
    responses={
        200: {"content": {"text/csv": {}}, "description": "The report (JSON, or CSV with format=csv)"}
    },
)
async def get_kpis(
    *,
    session: SessionDep,
    runtime: RuntimeDep,
    user: Reader,
    from_: Annotated[
        str,
        Query(
            alias="from",
            max_length=64,
            examples=["2026-01-01"],
            description="Period start, e.g. 2026-01-01 (UTC) — inclusive",
        ),
    ],
    to: Annotated[
        str, Query(max_length=64, examples=["2026-02-01"], description="Period end — exclusive: [from, to)")
    ],
    group_by: Annotated[
        str | None, Query(max_length=64, examples=["month"], description=f"One of {_GROUPS}")
    ] = None,
    customer: Annotated[Id | None, Query(description="Only this customer id")] = None,
    site: Annotated[Id | None, Query(description="Only this site id")] = None,
    model: Annotated[str | None, Query(max_length=256)] = None,
    fault_code: Annotated[str | None, Query(max_length=256)] = None,
    as_of: Annotated[
        str | None,
        Query(max_length=64, examples=["2026-01-15"], description="Cut the period here (default: now)"),
    ] = None,
    baseline_restore_hours: Annotated[
        float | None,
        Query(
            ge=0, le=24 * 30, description="Baseline restore time for 'downtime avoided' (default: settings)"
        ),
    ] = None,
    format: Annotated[str, Query(max_length=16, examples=["json"], description="json or csv")] = "json",
    definitions: Annotated[bool, Query(description="Include every KPI's definition (json)")] = True,
) -> Any:
    """Every KPI of shared/KPIS.md over the half-open period [from, to), by group."""
    if format not in ("json", "csv"):
        raise InvalidInput(f"format: {format!r} is not one of json, csv", field="format")
    start, end = parse_time(from_, "from"), parse_time(to, "to")
    check_period(start, end)
    customer = await report_customer(session, user, customer)
    spec = ReportSpec(
        start=start,
        end=end,
        group_by=_group_by(group_by),
        customer=customer,
        site=site,
        model=model,
        fault_code=fault_code,
        as_of=parse_time(as_of, "as_of") if as_of else None,
        baseline_restore_s=3600.0
        * (
            runtime.settings.kpi.baseline_restore_hours
            if baseline_restore_hours is None
            else baseline_restore_hours
        ),
    )
    report = await compute_report(session, spec)
    if format == "csv":
        name = f"kpis-{start:%Y%m%d}-{end:%Y%m%d}{'-' + spec.group_by.value if spec.group_by else ''}.csv"
        return Response(
            report_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": content_disposition(name)},
        )
    return report_json(report, definitions=definitions)


@router.get("/definitions", response_model=KpiDefinitionsPublic)
async def get_definitions(_user: CurrentUser) -> KpiDefinitionsPublic:
    """Every KPI column, in report order, with its label, unit and exact definition."""
    return KpiDefinitionsPublic(
        columns=[kpi.name for kpi in COLUMNS],
        definitions={k: KpiDefinitionPublic(**v) for k, v in definitions_dict().items()},
    )
