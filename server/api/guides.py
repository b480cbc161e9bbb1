"""Guided self-resolution (docs/sessions.md#guides): authored guides (admin, technician write;
ops reads), the guides offered for an incident and guide runs (customers too, for their own
incidents)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server.api.deps import SessionDep, require_role
from server.api.params import Count, Id
from server.api.schemas import ActionName
from server.base.users import Principal
from server.db.models import Role
from server.guides import service

__all__ = ["router"]

router = APIRouter(tags=["guides"])

Author = Annotated[Principal, require_role(Role.TECHNICIAN)]
Reader = Annotated[Principal, require_role(Role.TECHNICIAN, Role.OPS)]
Runner = Annotated[Principal, require_role(Role.TECHNICIAN, Role.CUSTOMER)]
IncidentId = Annotated[Id, Path()]
RunId = Annotated[Id, Path()]
Code = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class GuideStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    action: ActionName | None = None


class GuideCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fault_code: Code
    model: Code | None = None
    title: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    steps: list[GuideStep] = Field(min_length=1, max_length=50)
    customer_safe: bool = True


class GuidePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int | None
    fault_code: str | None
    model: str | None
    title: str
    steps: list[dict[str, Any]]
    customer_safe: bool
    source: str
    origin: str = ""
    use_count: int = 0
    success_count: int = 0


class GuideRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    guide_id: Id


class GuideStepResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: Count = Field(description="0-based index of the guide's step")
    result: Literal["done", "failed", "skipped"]
    note: Annotated[str, StringConstraints(max_length=2000)] = ""


class GuideRunFinish(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fixed: bool


class GuideRunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    incident_id: int
    guide_id: int
    user: str
    started_at: datetime
    steps_done: list[dict[str, Any]]
    state: str
    finished_at: datetime | None


@router.post("/guides", status_code=201, response_model=GuidePublic)
async def create_guide(body: GuideCreate, session: SessionDep, user: Author) -> GuidePublic:
    guide = await service.create_guide(
        session,
        user,
        fault_code=body.fault_code,
        model=body.model,
        title=body.title,
        steps=[step.model_dump() for step in body.steps],
        customer_safe=body.customer_safe,
    )
    return GuidePublic.model_validate(guide)


@router.get("/guides", response_model=list[GuidePublic])
async def list_guides(
    session: SessionDep,
    _user: Reader,
    fault_code: Annotated[str | None, Query(max_length=256)] = None,
    model: Annotated[str | None, Query(max_length=256)] = None,
) -> list[GuidePublic]:
    rows = await service.list_guides(session, fault_code=fault_code, model=model, customer_safe_only=False)
    return [GuidePublic.model_validate(row) for row in rows]


@router.get("/incidents/{incident_id}/guides", response_model=list[GuidePublic])
async def incident_guides(incident_id: IncidentId, session: SessionDep, user: Runner) -> list[GuidePublic]:
    """Authored guides for the incident's fault and model, plus (not for customers) what resolved
    the same fault before, each with its ``origin``."""
    return [
        GuidePublic.model_validate(item) for item in await service.incident_guides(session, user, incident_id)
    ]


@router.post("/incidents/{incident_id}/guide-runs", status_code=201, response_model=GuideRunPublic)
async def start_run(
    incident_id: IncidentId, body: GuideRunCreate, session: SessionDep, user: Runner
) -> GuideRunPublic:
    return GuideRunPublic.model_validate(await service.start_run(session, user, incident_id, body.guide_id))


@router.post("/guide-runs/{run_id}/steps", response_model=GuideRunPublic)
async def record_step(
    run_id: RunId, body: GuideStepResult, session: SessionDep, user: Runner
) -> GuideRunPublic:
    run = await service.record_step(
        session, user, run_id, step=body.step, result=body.result, note_text=body.note
    )
    return GuideRunPublic.model_validate(run)


@router.post("/guide-runs/{run_id}/finish", response_model=GuideRunPublic)
async def finish_run(
    run_id: RunId, body: GuideRunFinish, session: SessionDep, user: Runner
) -> GuideRunPublic:
    """Done: ``fixed`` or not. The incident resolves as ``customer`` once the fault has cleared."""
    return GuideRunPublic.model_validate(await service.finish_run(session, user, run_id, fixed=body.fixed))
