"""What the incident, customer and site endpoints accept and return (kept apart from the tables)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from server.api.params import Id
from server.db.models import Channel

__all__ = [
    "ContractHours",
    "CustomerCreate",
    "CustomerPublic",
    "CustomerUpdate",
    "DeviceAssignmentPublic",
    "DeviceUpdate",
    "IncidentAck",
    "IncidentAssign",
    "IncidentDetailPublic",
    "IncidentDispatch",
    "IncidentEntryPublic",
    "IncidentGuidance",
    "IncidentPublic",
    "IncidentReopen",
    "IncidentResolve",
    "IncidentUpdate",
    "SiteCreate",
    "SitePublic",
    "SiteUpdate",
    "StateIntervalPublic",
    "TransientFaultPublic",
]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
Note = Annotated[str, StringConstraints(max_length=8192)]
Criticality = Annotated[int, Field(ge=1, le=5, description="1 low … 5 life-critical")]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- customers and sites ------------------------------------------------------------------------


class ContractHours(_In):
    """Covered hours: on ``days`` (0 Monday … 6 Sunday) from ``start`` to ``end`` local time."""

    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4], min_length=1
    )
    start: Annotated[str, StringConstraints(max_length=5)] = "08:00"
    end: Annotated[str, StringConstraints(max_length=5)] = "18:00"
    tz: Annotated[str, StringConstraints(max_length=64)] = "UTC"

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError("must be HH:MM (24 h)")
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class CustomerCreate(_In):
    name: Name
    criticality: Criticality = 3
    contract_hours: ContractHours | None = Field(default=None, description="None: 24x7")
    cost_per_dispatch: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class CustomerUpdate(_In):
    name: Name | None = None
    criticality: Criticality | None = None
    contract_hours: ContractHours | None = None
    cost_per_dispatch: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class CustomerPublic(_Out):
    id: int
    name: str
    criticality: int
    contract_hours: dict[str, Any] | None
    cost_per_dispatch: float
    created_at: datetime


class SiteCreate(_In):
    name: Name
    criticality: Criticality | None = Field(default=None, description="None: the customer's")
    attended: bool = Field(
        default=False, description="Attended mode: every remote session needs a local operator's consent"
    )


class SiteUpdate(_In):
    name: Name | None = None
    criticality: Criticality | None = None
    attended: bool | None = None


class SitePublic(_Out):
    id: int
    customer_id: int
    name: str
    criticality: int | None
    attended: bool


class DeviceUpdate(_In):
    """Only the fields given change; ``null`` clears one."""

    customer_id: Id | None = None
    site_id: Id | None = None
    criticality: Criticality | None = None
    decommissioned_at: AwareDatetime | None = None


class DeviceAssignmentPublic(_Out):
    id: str
    customer_id: int | None
    site_id: int | None
    criticality: int | None
    decommissioned_at: datetime | None
    site: str | None
    model: str | None


# -- incidents --------------------------------------------------------------------------------------


class IncidentPublic(_Out):
    id: int
    device_id: str
    kind: str
    status: str
    fault_code: str | None
    codes: list[str]
    severity: str
    effect: str
    priority: int
    external: bool
    t_fault: datetime
    t_detect: datetime
    t_ack: datetime | None
    t_respond: datetime | None
    t_onsite: datetime | None
    t_restored: datetime | None
    t_resolved: datetime | None
    t_closed: datetime | None
    channel: str | None
    resolved_by: str | None
    assigned_to: str | None
    symptom: str
    cause: str
    resolution: str
    needs_dispatch: bool
    remote_used: bool
    visits: int
    reopened: int
    repeat_of: int | None = None  # the earlier incident this one repeats (docs/incidents.md)
    episodes: list[dict[str, Any]]
    model: str | None = None
    customer_id: int | None = None
    site_id: int | None = None


class IncidentEntryPublic(_Out):
    id: int
    ts: datetime
    kind: str
    actor: str
    detail: dict[str, Any]


class IncidentDetailPublic(IncidentPublic):
    timeline: list[IncidentEntryPublic] = Field(default_factory=list)


class IncidentAck(_In):
    note: Note = ""


class IncidentAssign(_In):
    user: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    note: Note = ""


class IncidentDispatch(_In):
    engineer: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
    onsite_at: AwareDatetime | None = Field(default=None, description="The engineer arrived (a visit)")
    note: Note = ""


class IncidentGuidance(_In):
    steps: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8192)]


class IncidentResolve(_In):
    channel: Channel | None = Field(
        default=None, description="auto, customer, remote or field; default: evidence"
    )
    cause: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8192)]
    resolution: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8192)]
    onsite_at: AwareDatetime | None = None
    visits: int | None = Field(default=None, ge=0, le=1000)
    external: bool | None = Field(default=None, description="Caused outside the equipment (power, network)")
    # knowledge capture (docs/knowledge.md): link an article, or draft one from this resolution
    article_id: Id | None = Field(default=None, description="The knowledge article used")
    draft_article: bool | None = Field(
        default=None,
        description="Draft an article from this resolution. Unset: drafted automatically when the fix is "
        "new — resolution notes given, resolved by a person (remote, customer or field) and no article "
        "covers the fault code for this model; false: never",
    )
    article_fixed: bool = Field(default=True, description="The linked article's fix worked")


class IncidentReopen(_In):
    reason: Note = ""


class IncidentUpdate(_In):
    needs_dispatch: bool | None = None
    symptom: Note | None = None
    external: bool | None = None
    priority: int | None = Field(default=None, ge=1, le=4)


class StateIntervalPublic(_Out):
    state: str
    start: datetime
    end: datetime | None
    external: bool
    planned_end: datetime | None


class TransientFaultPublic(_Out):
    code: str
    raised_at: datetime
    cleared_at: datetime
