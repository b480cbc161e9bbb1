"""When will a device's consumables run out and its wear parts wear out (any role, within the
caller's device scope)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from server.api.deps import CurrentUser, RuntimeDep, SessionDep
from server.api.devices import DeviceIdPath
from server.base import access
from server.maintenance import forecast

__all__ = ["ForecastPublic", "router"]

router = APIRouter(tags=["forecast"])


class ForecastPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    metric: str
    source: str  # "pattern:<glob>" or "rule:<name>"
    direction: Literal["falling", "rising"]
    threshold: float
    status: forecast.ForecastStatus
    reason: str
    eta: datetime | None
    slope_per_day: float | None
    points: int
    r2: float | None
    residual: float | None
    since: datetime | None
    last_ts: datetime | None
    last_value: float | None
    reset_at: datetime | None


@router.get("/devices/{device_id}/forecast", response_model=list[ForecastPublic])
async def get_forecast(
    *,
    device_id: DeviceIdPath,
    session: SessionDep,
    runtime: RuntimeDep,
    user: CurrentUser,
    metric: Annotated[str | None, Query(max_length=128)] = None,
) -> list[ForecastPublic]:
    """One forecast per consumable / wear metric (and per rule watching a metric). A status other
    than ``ok`` is an answer — ``insufficient_data``, ``not_trending``, ``noisy``… — not an error."""
    await access.check_device(session, user, device_id)
    results = await forecast.device_forecast(session, device_id, runtime.settings.maintenance, metric=metric)
    return [ForecastPublic.model_validate(result) for result in results]
