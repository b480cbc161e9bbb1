"""Forecasts for consumables and wear counters: when will a metric reach its threshold?

Which metrics: those matching ``maintenance.forecast_targets`` (first matching pattern wins:
toner falls to 0 %, drum wear rises to 100 %…), plus every metric an enabled rule for the
device's model watches — ``<``/``<=`` rules as a fall toward the rule's value, ``>``/``>=`` as a
rise toward it.

How (:func:`forecast_series`, pure): take the latest readings (at most ``forecast_max_points``,
none older than ``forecast_window_days`` before the newest), keep only those after the last
*reset* — a step of at least ``reset_jump`` in the wrong direction, e.g. a new toner cartridge —
and fit a least-squares line. The answer carries the slope, the number of points, R², the
residual and a ``status``; "not enough data" and "not trending toward the threshold" are answers,
not errors:

    reached            the latest reading is at or beyond the threshold
    insufficient_data  fewer than forecast_min_points readings, or spanning < forecast_min_span_s
    not_trending       the slope is flat, points away from the threshold, or is not significant
                       (|slope| < forecast_min_t standard errors)
    noisy              a significant trend, but R² < forecast_min_r2: too scattered for a date
    beyond_horizon     at this rate the threshold is more than forecast_horizon_days away
    ok                 ``eta``: when the fitted line reaches the threshold
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Literal

from sqlalchemy import or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server import fleet
from server.db.models import Rule, TelemetrySample
from server.settings import ForecastTarget, MaintenanceSettings

__all__ = [
    "NOISE_FACTOR",
    "FitOptions",
    "Forecast",
    "ForecastStatus",
    "Target",
    "device_forecast",
    "device_metrics",
    "find_reset",
    "forecast_series",
    "targets_for",
]

Direction = Literal["falling", "rising"]
_DAY = 86400.0
NOISE_FACTOR = 5.0
"""A reset must also be this many times the median step between readings."""


class ForecastStatus(StrEnum):
    OK = "ok"
    REACHED = "reached"
    INSUFFICIENT_DATA = "insufficient_data"
    NOT_TRENDING = "not_trending"
    NOISY = "noisy"
    BEYOND_HORIZON = "beyond_horizon"


@dataclass(frozen=True, slots=True)
class Target:
    """One metric of one device and the threshold it is forecast toward."""

    metric: str
    direction: Direction
    threshold: float
    reset_jump: float  # 0: no reset detection
    source: str  # "pattern:<glob>" or "rule:<name>"


@dataclass(frozen=True, slots=True)
class FitOptions:
    min_points: int = 5
    min_span_s: float = 3600.0
    min_r2: float = 0.5
    min_t: float = 3.0
    horizon_days: float = 730.0

    @classmethod
    def from_settings(cls, settings: MaintenanceSettings) -> FitOptions:
        return cls(
            min_points=settings.forecast_min_points,
            min_span_s=settings.forecast_min_span_s,
            min_r2=settings.forecast_min_r2,
            min_t=settings.forecast_min_t,
            horizon_days=settings.forecast_horizon_days,
        )


@dataclass(frozen=True, slots=True)
class Forecast:
    metric: str
    source: str
    direction: Direction
    threshold: float
    status: ForecastStatus
    reason: str  # one line, for people
    eta: datetime | None  # status ok: when the fitted line reaches the threshold
    slope_per_day: float | None  # units of the metric per day
    points: int  # readings the fit used (after the last reset)
    r2: float | None  # coefficient of determination of the fit, 0..1
    residual: float | None  # standard deviation of the residuals, units of the metric
    since: datetime | None  # first reading used
    last_ts: datetime | None  # newest reading
    last_value: float | None
    reset_at: datetime | None  # the last reset detected (replacement), if any


@dataclass(frozen=True, slots=True)
class _Fit:
    points: int = 0
    since: datetime | None = None
    reset_at: datetime | None = None
    slope_per_day: float | None = None
    r2: float | None = None
    residual: float | None = None


def _matches(metric: str, targets: Sequence[ForecastTarget]) -> ForecastTarget | None:
    return next((target for target in targets if fnmatchcase(metric, target.pattern)), None)


def targets_for(
    metrics: Iterable[str], patterns: Sequence[ForecastTarget], rules: Iterable[Rule]
) -> list[Target]:
    """What to forecast for a device that reports ``metrics``, given the configured patterns and
    the enabled rules that apply to it. A metric may appear once per pattern and once per rule."""
    known = set(metrics)
    found: list[Target] = []
    for metric in sorted(known):
        pattern = _matches(metric, patterns)
        if pattern is not None:
            found.append(
                Target(
                    metric,
                    pattern.direction,
                    pattern.threshold,
                    pattern.reset_jump,
                    f"pattern:{pattern.pattern}",
                )
            )
    for rule in sorted(rules, key=lambda rule: rule.id):
        if rule.metric not in known:
            continue
        pattern = _matches(rule.metric, patterns)
        direction: Direction = "falling" if rule.op in {"<", "<="} else "rising"
        # a consumable's replacement is a reset for its rules too; other metrics have none
        reset = pattern.reset_jump if pattern is not None and pattern.direction == direction else 0.0
        found.append(Target(rule.metric, direction, rule.value, reset, f"rule:{rule.name}"))
    return found


def find_reset(values: Sequence[float], direction: Direction, jump: float) -> int:
    """Index of the first reading after the last reset (0 when there is none): a step against
    ``direction`` — up for a falling level, down for a rising wear counter — of at least ``jump``
    and at least ``NOISE_FACTOR`` times the median step, so that noise is never taken for a
    replacement."""
    if jump <= 0 or len(values) < 2:
        return 0
    steps = [b - a for a, b in itertools.pairwise(values)]
    typical = statistics.median(abs(step) for step in steps)
    limit = max(jump, NOISE_FACTOR * typical)
    sign = 1.0 if direction == "falling" else -1.0
    start = 0
    for i, step in enumerate(steps, start=1):
        if sign * step >= limit:
            start = i
    return start


def forecast_series(
    readings: Sequence[tuple[datetime, float]], target: Target, options: FitOptions | None = None
) -> Forecast:
    """The forecast for one target from its readings (any order)."""
    options = options or FitOptions()
    ordered = sorted(readings, key=lambda reading: reading[0])

    def answer(
        status: ForecastStatus, reason: str, fit: _Fit | None = None, eta: datetime | None = None
    ) -> Forecast:
        fit = fit or _Fit()
        last = ordered[-1] if ordered else None
        return Forecast(
            metric=target.metric,
            source=target.source,
            direction=target.direction,
            threshold=target.threshold,
            status=status,
            reason=reason,
            eta=eta,
            slope_per_day=fit.slope_per_day,
            points=fit.points,
            r2=fit.r2,
            residual=fit.residual,
            since=fit.since,
            last_ts=last[0] if last else None,
            last_value=last[1] if last else None,
            reset_at=fit.reset_at,
        )

    if not ordered:
        return answer(ForecastStatus.INSUFFICIENT_DATA, "no readings")
    last_ts, last_value = ordered[-1]
    falling = target.direction == "falling"
    if last_value <= target.threshold if falling else last_value >= target.threshold:
        return answer(
            ForecastStatus.REACHED, f"latest reading {last_value:g} is at or past {target.threshold:g}"
        )

    start = find_reset([value for _, value in ordered], target.direction, target.reset_jump)
    used = ordered[start:]
    fit = _Fit(points=len(used), since=used[0][0], reset_at=used[0][0] if start else None)
    span = (last_ts - used[0][0]).total_seconds()
    if len(used) < options.min_points or span < options.min_span_s or span <= 0:
        return answer(
            ForecastStatus.INSUFFICIENT_DATA,
            f"{len(used)} readings over {span / 3600:.1f} h"
            + (" since the last reset" if start else "")
            + f"; needs {options.min_points} over {options.min_span_s / 3600:g} h",
            fit,
        )

    line = _least_squares(used)
    fit = replace(fit, slope_per_day=line.slope, r2=line.r2, residual=line.residual)
    status, reason, eta = _judge(line, target, options, last_ts)
    return answer(status, reason, fit, eta)


@dataclass(frozen=True, slots=True)
class _Line:
    slope: float  # per day
    intercept: float  # the fitted value at the newest reading
    r2: float
    residual: float  # standard deviation of the residuals
    t_value: float  # |slope| / its standard error


def _least_squares(readings: Sequence[tuple[datetime, float]]) -> _Line:
    """Ordinary least squares over at least 3 readings spanning a positive time; x in days
    before the newest reading."""
    newest = readings[-1][0]
    xs = [(ts - newest).total_seconds() / _DAY for ts, _ in readings]
    ys = [value for _, value in readings]
    n = len(readings)
    x_mean, y_mean = sum(xs) / n, sum(ys) / n
    sxx = sum((x - x_mean) ** 2 for x in xs)
    sxy = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True))
    syy = sum((y - y_mean) ** 2 for y in ys)
    slope = sxy / sxx
    intercept = y_mean - slope * x_mean
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    residual = math.sqrt(ss_res / (n - 2))
    stderr = residual / math.sqrt(sxx)
    t_value = abs(slope) / stderr if stderr > 0 else (math.inf if slope else 0.0)
    r2 = max(0.0, 1.0 - ss_res / syy) if syy > 0 else 0.0
    return _Line(slope, intercept, r2, residual, t_value)


def _judge(
    line: _Line, target: Target, options: FitOptions, newest: datetime
) -> tuple[ForecastStatus, str, datetime | None]:
    slope = line.slope
    toward = slope < 0 if target.direction == "falling" else slope > 0
    if not toward or line.t_value < options.min_t:
        if slope == 0:
            why = "flat"
        elif line.t_value < options.min_t:
            why = f"slope {slope:+.3g}/day is within the noise ({line.t_value:.1f} standard errors)"
        else:
            why = f"moving away from it ({slope:+.3g}/day)"
        return ForecastStatus.NOT_TRENDING, f"not trending toward {target.threshold:g}: {why}", None
    if line.r2 < options.min_r2:
        return ForecastStatus.NOISY, f"trend {slope:+.3g}/day but R² {line.r2:.2f} < {options.min_r2:g}", None
    days = max(0.0, (target.threshold - line.intercept) / slope)
    if days > options.horizon_days:
        reason = (
            f"at {slope:+.3g}/day, {target.threshold:g} is {days:.0f} days away (> {options.horizon_days:g})"
        )
        return ForecastStatus.BEYOND_HORIZON, reason, None
    eta = newest + timedelta(days=days)
    return ForecastStatus.OK, f"{target.threshold:g} in {days:.1f} days at {slope:+.3g}/day", eta


# --- the database side -------------------------------------------------------------------------

# loose index scan over (device_id, metric, ts): one index probe per distinct metric
_DEVICE_METRICS = text(
    """
    WITH RECURSIVE m(metric) AS (
        SELECT MIN(metric) FROM telemetry WHERE device_id = :device_id
        UNION ALL
        SELECT (SELECT MIN(t.metric) FROM telemetry t WHERE t.device_id = :device_id AND t.metric > m.metric)
        FROM m WHERE m.metric IS NOT NULL
    )
    SELECT metric FROM m WHERE metric IS NOT NULL
    """
)


async def device_metrics(session: AsyncSession, device_id: str) -> list[str]:
    """The distinct metrics a device has reported."""
    return list(await session.scalars(_DEVICE_METRICS, {"device_id": device_id}))


async def _readings(
    session: AsyncSession, device_id: str, metric: str, settings: MaintenanceSettings
) -> list[tuple[datetime, float]]:
    rows = await session.execute(
        select(TelemetrySample.ts, TelemetrySample.value)
        .where(TelemetrySample.device_id == device_id, TelemetrySample.metric == metric)
        .order_by(TelemetrySample.ts.desc(), TelemetrySample.id.desc())
        .limit(settings.forecast_max_points)
    )
    readings = [(ts, value) for ts, value in rows]
    if not readings:
        return []
    oldest = readings[0][0] - timedelta(days=settings.forecast_window_days)
    return [(ts, value) for ts, value in reversed(readings) if ts >= oldest]


async def device_forecast(
    session: AsyncSession, device_id: str, settings: MaintenanceSettings, *, metric: str | None = None
) -> list[Forecast]:
    """Forecasts for every consumable / wear metric of one device (or just ``metric``)."""
    device = await fleet.get_device(session, device_id)
    metrics = await device_metrics(session, device_id)
    if metric is not None:
        metrics = [name for name in metrics if name == metric]
    rules = await session.scalars(
        select(Rule).where(
            Rule.enabled.is_(True),
            Rule.metric.in_(metrics),
            or_(Rule.model.is_(None), Rule.model == device.model),
        )
    )
    options = FitOptions.from_settings(settings)
    results: list[Forecast] = []
    cache: dict[str, list[tuple[datetime, float]]] = {}
    for target in targets_for(metrics, settings.forecast_targets, rules):
        if target.metric not in cache:
            cache[target.metric] = await _readings(session, device_id, target.metric, settings)
        results.append(forecast_series(cache[target.metric], target, options))
    return results
