"""Consumable and wear forecasts: the fit on synthetic series (pure), then the database and API
on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Device, Role, Rule, TelemetrySample
from server.errors import NotFound
from server.maintenance.forecast import (
    FitOptions,
    ForecastStatus,
    Target,
    device_forecast,
    device_metrics,
    find_reset,
    forecast_series,
    targets_for,
)
from server.runtime import Runtime
from server.settings import MaintenanceSettings, default_forecast_targets
from tests.support.server import api_client, create_token, server_settings

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TONER = Target("printer.toner.black.percent", "falling", 0.0, 10.0, "pattern:*.toner.*.percent")
WEAR = Target("printer.drum.wear.percent", "rising", 100.0, 10.0, "pattern:*.wear.percent")
Sessions = async_sessionmaker[AsyncSession]


def series(
    value_at: Callable[[float], float],
    *,
    days: float,
    every_h: float = 1.0,
    start: datetime = T0,
    jitter: float = 0.0,
    seed: int = 0,
) -> list[tuple[datetime, float]]:
    """Readings every ``every_h`` hours for ``days`` days: ``value_at(day)`` plus uniform noise
    of ± ``jitter`` (seeded, so every run sees the same series)."""
    rng = random.Random(seed)
    count = round(days * 24 / every_h)
    return [
        (start + timedelta(hours=i * every_h), value_at(i * every_h / 24) + rng.uniform(-jitter, jitter))
        for i in range(count + 1)
    ]


def test_linear_falling_toner_predicts_the_day_it_runs_out() -> None:
    readings = series(lambda day: 90.0 - 2.0 * day, days=10, jitter=0.3, seed=1)  # empty on day 45
    result = forecast_series(readings, TONER)
    assert result.status is ForecastStatus.OK, result.reason
    assert result.eta is not None
    assert abs(result.eta - (T0 + timedelta(days=45))) < timedelta(hours=12)
    assert result.slope_per_day == pytest.approx(-2.0, abs=0.02)
    assert result.points == len(readings) == 241
    assert result.r2 is not None
    assert result.r2 > 0.99
    assert result.residual == pytest.approx(0.17, abs=0.05)  # uniform ±0.3: standard deviation 0.17
    assert (result.since, result.last_ts, result.reset_at) == (T0, T0 + timedelta(days=10), None)


def test_exact_line_gives_the_exact_date_and_rising_wear_works_too() -> None:
    readings = series(lambda day: 20.0 + 1.6 * day, days=5, every_h=6)  # 100 % on day 50
    result = forecast_series(readings, WEAR)
    assert result.status is ForecastStatus.OK
    assert result.eta is not None
    assert abs(result.eta - (T0 + timedelta(days=50))) < timedelta(seconds=1)
    assert result.r2 == pytest.approx(1.0)
    assert result.reason == "100 in 45.0 days at +1.6/day"


def test_a_replacement_resets_the_fit_to_the_readings_after_it() -> None:
    before = series(lambda day: 40.0 - 6.0 * day, days=5)  # down to 10 %, steep
    replaced = T0 + timedelta(days=5, hours=1)
    after = series(lambda day: 100.0 - 1.0 * day, days=4, start=replaced)  # new cartridge: 1 %/day
    result = forecast_series(before + after, TONER)
    assert result.reset_at == replaced
    assert result.since == replaced
    assert result.points == len(after)
    assert result.slope_per_day == pytest.approx(-1.0)
    assert result.eta is not None
    assert abs(result.eta - (replaced + timedelta(days=100))) < timedelta(minutes=1)

    # without reset detection the two segments would be fitted as one (and go the wrong way)
    naive = forecast_series(before + after, Target(TONER.metric, "falling", 0.0, 0.0, "test"))
    assert naive.reset_at is None
    assert naive.status is ForecastStatus.NOT_TRENDING


def test_a_drum_replacement_resets_a_rising_wear_counter() -> None:
    values = [50.0, 55.0, 60.0, 2.0, 3.0, 4.0]
    assert find_reset(values, "rising", 10.0) == 3
    assert find_reset(values, "falling", 10.0) == 0  # a drop is no reset of a falling level
    two_refills = [30.0, 29.0, 28.0, 100.0, 99.0, 98.0, 15.0, 14.0, 100.0, 99.0, 98.0]
    assert find_reset(two_refills, "falling", 10.0) == 8  # the last one
    assert find_reset([50.0, 62.0, 49.0, 63.0, 48.0, 61.0], "falling", 10.0) == 0  # noise, not refills
    assert find_reset(values, "rising", 0.0) == 0


@pytest.mark.parametrize(
    ("readings", "status", "reason_part"),
    [
        ([], ForecastStatus.INSUFFICIENT_DATA, "no readings"),
        (series(lambda day: 80.0 - day, days=3, every_h=24), ForecastStatus.INSUFFICIENT_DATA, "4 readings"),
        (series(lambda day: 80.0 - day, days=0.02, every_h=0.1), ForecastStatus.INSUFFICIENT_DATA, "0.5 h"),
        (series(lambda day: 55.0, days=10), ForecastStatus.NOT_TRENDING, "flat"),
        (series(lambda day: 50.0 + 0.5 * day, days=10), ForecastStatus.NOT_TRENDING, "moving away"),
        (
            series(lambda day: 50.0, days=10, jitter=10.0, seed=7),
            ForecastStatus.NOT_TRENDING,
            "within the noise",
        ),
        (
            series(lambda day: 60.0 - 0.5 * day, days=20, jitter=20.0, seed=3),
            ForecastStatus.NOISY,
            "R²",
        ),
        (series(lambda day: 80.0 - 0.01 * day, days=10), ForecastStatus.BEYOND_HORIZON, "7990 days away"),
        (series(lambda day: 5.0 - day, days=5), ForecastStatus.REACHED, "latest reading 0"),
    ],
    ids=["empty", "too-few", "too-short", "flat", "away", "noise", "noisy-trend", "far", "reached"],
)
def test_honest_answers_instead_of_a_date(
    readings: list[tuple[datetime, float]], status: ForecastStatus, reason_part: str
) -> None:
    result = forecast_series(readings, TONER)
    assert result.status is status, result.reason
    assert reason_part in result.reason
    assert result.eta is None


def test_options_tune_the_verdict() -> None:
    readings = series(lambda day: 60.0 - 0.5 * day, days=20, jitter=20.0, seed=3)
    assert forecast_series(readings, TONER, FitOptions(min_r2=0.0)).status is ForecastStatus.OK
    short = series(lambda day: 80.0 - day, days=3, every_h=24)
    assert forecast_series(short, TONER, FitOptions(min_points=3)).status is ForecastStatus.OK


def test_default_patterns_and_rules_choose_the_targets() -> None:
    metrics = [
        "printer.toner.black.percent",
        "printer.toner.cyan.percent",
        "printer.drum.wear.percent",
        "printer.fuser.temperature.celsius",
        "printer.pages.total",
        "system.cpu.percent",
    ]
    rules = [
        Rule(id=1, name="fuser hot", metric="printer.fuser.temperature.celsius", op=">=", value=230.0),
        Rule(id=2, name="toner low", metric="printer.toner.black.percent", op="<", value=10.0),
        Rule(id=3, name="elsewhere", metric="not.reported", op="<", value=1.0),
    ]
    found = [
        (t.metric, t.direction, t.threshold, t.reset_jump, t.source)
        for t in targets_for(metrics, default_forecast_targets(), rules)
    ]
    assert found == [
        ("printer.drum.wear.percent", "rising", 100.0, 10.0, "pattern:*.wear.percent"),
        ("printer.toner.black.percent", "falling", 0.0, 10.0, "pattern:*.toner.*.percent"),
        ("printer.toner.cyan.percent", "falling", 0.0, 10.0, "pattern:*.toner.*.percent"),
        ("printer.fuser.temperature.celsius", "rising", 230.0, 0.0, "rule:fuser hot"),
        ("printer.toner.black.percent", "falling", 10.0, 10.0, "rule:toner low"),
    ]


# --- database and API --------------------------------------------------------------------------


async def store(
    sessions: Sessions, device_id: str, model: str, data: dict[str, list[tuple[datetime, float]]]
) -> None:
    async with sessions() as session:
        session.add(Device(id=device_id, model=model))
        await session.flush()
        session.add_all(
            TelemetrySample(device_id=device_id, metric=metric, ts=ts, value=value)
            for metric, readings in data.items()
            for ts, value in readings
        )
        await session.commit()


def printer_data() -> dict[str, list[tuple[datetime, float]]]:
    return {
        "printer.toner.black.percent": series(lambda day: 90.0 - 2.0 * day, days=10),
        "printer.drum.wear.percent": series(lambda day: 30.0 + 0.5 * day, days=10, every_h=12),
        "printer.fuser.temperature.celsius": series(lambda day: 180.0 + day, days=10, every_h=6),
        "system.cpu.percent": series(lambda day: 12.0, days=1),
    }


async def test_device_forecast_reads_the_latest_window(sessions: Sessions) -> None:
    await store(sessions, "fc-1", "LX-9", printer_data())
    await store(sessions, "fc-2", "MX-1", {"printer.toner.black.percent": series(lambda day: 10.0, days=1)})
    async with sessions() as session:
        session.add(
            Rule(name="fuser", metric="printer.fuser.temperature.celsius", op=">", value=230.0, model="LX-9")
        )
        session.add(
            Rule(
                name="other model",
                metric="printer.fuser.temperature.celsius",
                op=">",
                value=1.0,
                model="MX-1",
            )
        )
        session.add(Rule(name="off", metric="system.cpu.percent", op=">", value=90.0, enabled=False))
        await session.commit()
    settings = MaintenanceSettings(forecast_max_points=100, forecast_window_days=3)
    async with sessions() as session:
        assert await device_metrics(session, "fc-1") == sorted(printer_data())
        results = await device_forecast(session, "fc-1", settings)
        with pytest.raises(NotFound):
            await device_forecast(session, "nope", settings)
        only = await device_forecast(session, "fc-1", settings, metric="printer.drum.wear.percent")
    by_source = {result.source: result for result in results}
    assert sorted(by_source) == ["pattern:*.toner.*.percent", "pattern:*.wear.percent", "rule:fuser"]
    toner = by_source["pattern:*.toner.*.percent"]
    assert toner.points == 73  # 3 days of hourly readings (max_points 100 would allow more)
    assert toner.since == T0 + timedelta(days=7)
    assert toner.eta is not None
    assert abs(toner.eta - (T0 + timedelta(days=45))) < timedelta(minutes=1)
    fuser = by_source["rule:fuser"]
    assert (fuser.status, fuser.direction, fuser.threshold) == (ForecastStatus.OK, "rising", 230.0)
    assert fuser.eta is not None
    assert abs(fuser.eta - (T0 + timedelta(days=50))) < timedelta(minutes=1)
    assert [result.metric for result in only] == ["printer.drum.wear.percent"]
    assert only[0].eta is not None
    assert abs(only[0].eta - (T0 + timedelta(days=140))) < timedelta(minutes=1)


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    async with api_client(server_settings(db_url, maintenance={"rule_interval": 0})) as pair:
        yield pair


async def test_forecast_endpoint(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, runtime = api
    await store(runtime.sessions, "fc-api", "LX-9", printer_data())
    await store(
        runtime.sessions, "fc-new", "LX-9", {"printer.toner.black.percent": series(lambda d: 80.0, days=0)}
    )
    headers = {"Authorization": f"Bearer {await create_token(runtime, 'pat', Role.PROVISIONING)}"}
    response = await client.get("/api/v1/devices/fc-api/forecast", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert [(item["metric"], item["status"]) for item in body] == [
        ("printer.drum.wear.percent", "ok"),
        ("printer.toner.black.percent", "ok"),
    ]
    toner = body[1]
    assert set(toner) == {
        "metric", "source", "direction", "threshold", "status", "reason", "eta", "slope_per_day",
        "points", "r2", "residual", "since", "last_ts", "last_value", "reset_at",
    }  # fmt: skip
    eta = datetime.fromisoformat(toner["eta"])
    assert abs(eta - datetime(2026, 12, 16, tzinfo=UTC)) < timedelta(seconds=1)
    assert toner["slope_per_day"] == pytest.approx(-2.0)

    fresh = (await client.get("/api/v1/devices/fc-new/forecast", headers=headers)).json()
    assert [(item["status"], item["points"], item["eta"]) for item in fresh] == [
        ("insufficient_data", 1, None)
    ]
    one = await client.get(
        "/api/v1/devices/fc-api/forecast", params={"metric": "printer.drum.wear.percent"}, headers=headers
    )
    assert len(one.json()) == 1
    missing = await client.get("/api/v1/devices/nope/forecast", headers=headers)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert (await client.get("/api/v1/devices/fc-api/forecast")).status_code == 401
