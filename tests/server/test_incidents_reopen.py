"""Recurrence of an incident's fault: within ``incidents.reopen_window_hours`` of its restore it
reopens the incident; later (within 30 days) it is a new incident linked as a repeat failure;
while the incident is still open it joins it. On SQLite and PostgreSQL (docs/incidents.md)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from server.base import users
from server.db.models import Role
from server.db.models.incidents import IncidentEpisode
from server.errors import ConfigError
from server.incidents import service
from server.kpi import ReportSpec, compute_report, load_dataset, reference_report
from server.settings import IncidentSettings, load_settings
from tests.server.incident_factory import (
    Device,
    Sessions,
    at,
    feed_each,
    incidents_of,
    secs,
    timeline_of,
    tracker,
)

HOUR = 3600.0
DAY = 86400.0


def _rel(value: float | None) -> float | None:
    return None if value is None else round(value - at(0).timestamp(), 3)


async def _episode_rows(sessions: Sessions, incident_id: int) -> list[tuple[float | None, ...]]:
    """The incident's rows in incident_episodes: (fault, detect, restored) in seconds after T0."""
    async with sessions() as session:
        rows = await session.scalars(
            select(IncidentEpisode)
            .where(IncidentEpisode.incident_id == incident_id)
            .order_by(IncidentEpisode.seq)
        )
        return [(_rel(r.fault_s), _rel(r.detect_s), _rel(r.restored_s)) for r in rows]


async def test_a_recurrence_after_the_window_is_a_new_incident_linked_as_a_repeat(sessions: Sessions) -> None:
    inc = tracker()  # the default window: 24 h after the restore
    dev = Device("rpt-1")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.cleared(400))
    later = 400 + 25 * HOUR
    await feed_each(sessions, inc, dev.raised(later), dev.cleared(later + 600))
    first, second = await incidents_of(sessions, dev.id)
    assert (first.reopened, first.status, first.repeat_of) == (0, "resolved", None)
    assert (second.reopened, second.status, second.repeat_of) == (0, "resolved", first.id)
    assert (secs(second.t_fault), secs(second.t_restored)) == (later, later + 600)
    (of,) = [e for e in await timeline_of(sessions, second.id) if e.kind == "repeat.of"]
    assert (of.detail["incident_id"], of.detail["after_restore_s"], of.detail["codes"]) == (
        first.id,
        25 * HOUR,
        ["E1"],
    )
    (repeated,) = [e for e in await timeline_of(sessions, first.id) if e.kind == "repeated"]
    assert repeated.detail["incident_id"] == second.id
    assert "reopened" not in [e.kind for e in await timeline_of(sessions, first.id)]
    # each incident's failure episodes as rows (what the KPIs read)
    assert await _episode_rows(sessions, first.id) == [(100, 160, 400)]
    assert await _episode_rows(sessions, second.id) == [(later, later + 60, later + 600)]


async def test_a_recurrence_within_the_window_reopens_and_its_episode_is_a_row(sessions: Sessions) -> None:
    inc = tracker(reopen_window_hours=2)
    dev = Device("rpt-2")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.cleared(400))
    await feed_each(sessions, inc, dev.raised(400 + 2 * HOUR - 60), dev.cleared(3 * HOUR))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.reopened, incident.repeat_of, len(incident.episodes)) == (1, None, 2)
    assert await _episode_rows(sessions, incident.id) == [
        (100, 160, 400),
        (400 + 2 * HOUR - 60, 400 + 2 * HOUR, 3 * HOUR),
    ]
    # just past the window after the last restore: a repeat of it
    await feed_each(sessions, inc, dev.raised(5 * HOUR + 1), dev.cleared(6 * HOUR))
    first, second = await incidents_of(sessions, dev.id)
    assert (first.id, first.reopened, second.repeat_of) == (incident.id, 1, incident.id)


async def test_a_recurrence_30_days_after_the_restore_is_not_linked(sessions: Sessions) -> None:
    inc = tracker()
    dev = Device("rpt-3")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.cleared(400))
    await feed_each(sessions, inc, dev.raised(400 + 30 * DAY), dev.cleared(400 + 30 * DAY + 500))
    first, second = await incidents_of(sessions, dev.id)
    assert (first.reopened, second.repeat_of) == (0, None)
    assert [e.kind for e in await timeline_of(sessions, second.id) if e.kind.startswith("repeat")] == []


async def test_another_code_after_the_window_is_no_repeat(sessions: Sessions) -> None:
    inc = tracker()
    dev = Device("rpt-4")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100, "A"), dev.cleared(400, "A"))
    await feed_each(sessions, inc, dev.raised(2 * DAY, "B"), dev.cleared(2 * DAY + 500, "B"))
    await feed_each(sessions, inc, dev.raised(3 * DAY, "A"), dev.cleared(3 * DAY + 500, "A"))
    a, b, a_again = await incidents_of(sessions, dev.id)
    assert (b.repeat_of, a_again.repeat_of) == (None, a.id)


async def test_a_recurrence_while_the_incident_is_still_open_joins_it(sessions: Sessions) -> None:
    """Restored but not resolved (a person took it over): days later the fault joins it, as before."""
    inc = tracker()
    dev = Device("rpt-5")
    async with sessions() as session:
        user = await users.create_user(session, "rita", Role.TECHNICIAN, actor="test")
        await session.commit()
    who = users.Principal(user.id, user.name, Role.TECHNICIAN)
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.cleared(400))
    (incident,) = await incidents_of(sessions, dev.id)
    async with sessions() as session:
        await service.reopen(session, incident.id, who, reason="still jams")
        await session.commit()
    await feed_each(sessions, inc, dev.raised(3 * DAY), dev.cleared(3 * DAY + 500))
    (joined,) = await incidents_of(sessions, dev.id)
    assert (joined.id, joined.status, joined.reopened, joined.repeat_of) == (incident.id, "open", 1, None)
    assert len(joined.episodes) == 2
    assert len(await _episode_rows(sessions, joined.id)) == 2


async def test_a_rebuild_keeps_the_repeat_link_and_the_episode_rows(sessions: Sessions) -> None:
    inc = tracker()
    dev = Device("rpt-6")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.cleared(400))
    await feed_each(sessions, inc, dev.raised(2 * DAY), dev.cleared(2 * DAY + 500))
    before = [(i.id, i.repeat_of) for i in await incidents_of(sessions, dev.id)]
    rows = [await _episode_rows(sessions, i) for i, _ in before]
    async with sessions() as session:
        await inc.rebuild(session, dev.id, now=at(3 * DAY).timestamp())
        await session.commit()
    assert [(i.id, i.repeat_of) for i in await incidents_of(sessions, dev.id)] == before
    assert [await _episode_rows(sessions, i) for i, _ in before] == rows
    assert before[1][1] == before[0][0]


def test_the_window_setting_and_its_old_name() -> None:
    assert IncidentSettings().reopen_window_hours == 24.0
    assert IncidentSettings(reopen_window_days=2).reopen_window_hours == 48.0  # the old name, in days
    assert IncidentSettings(reopen_window_days=0).reopen_window_hours == 0.0
    with pytest.raises(ValidationError, match="set only reopen_window_hours"):
        IncidentSettings(reopen_window_days=1, reopen_window_hours=5)
    with pytest.raises(ConfigError) as info:
        load_settings(None, mqtt={"enabled": False}, incidents={"reopen_window_hours": -1})
    assert info.value.setting == "incidents.reopen_window_hours"


async def test_mtrs_per_episode_and_per_incident_from_what_the_writer_stored(sessions: Sessions) -> None:
    """One incident reopened within the window (two outages: 5 and 15 minutes) and a repeat a
    day later (10 minutes): per episode the outages, per incident first fault to last restore."""
    inc = tracker()
    dev = Device("rpt-kpi")
    second = 400 + 2 * HOUR
    later = second + 900 + 25 * HOUR
    await feed_each(
        sessions,
        inc,
        dev.status(0),
        dev.raised(100),
        dev.cleared(400),
        dev.raised(second),
        dev.cleared(second + 900),
        dev.raised(later),
        dev.cleared(later + 600),
    )
    first, repeat = await incidents_of(sessions, dev.id)
    assert (first.reopened, repeat.repeat_of) == (1, first.id)
    spec = ReportSpec(at(0), at(3 * DAY), as_of=at(3 * DAY))
    for rollups in (True, False):
        async with sessions() as session:
            values = (await compute_report(session, spec, rollups=rollups)).rows[0].values
        async with sessions() as session:
            reference = reference_report(await load_dataset(session), spec).rows[0].values
        for kpis in (values, reference):
            assert (kpis["mtrs_episode_n"], kpis["mtrs_episode_mean_s"]) == (
                3,
                pytest.approx((300 + 900 + 600) / 3),
            )
            assert kpis["mtrs_episode_median_s"] == pytest.approx(600)
            assert (kpis["mtrs_n"], kpis["mtrs_mean_s"]) == (2, pytest.approx((second + 900 - 100 + 600) / 2))
            assert kpis["repeat_failures"] == 1  # the repeat counts as one (a reopen would not)
