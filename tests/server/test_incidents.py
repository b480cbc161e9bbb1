"""Incidents and state intervals from device messages, through the ingest writer and the
sweeper, on SQLite and PostgreSQL (server/incidents)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import select

from server.base import users
from server.db.models import Command, Customer, Device, Role, Site, StateTracker
from server.db.types import utcnow
from tests.server.incident_factory import (
    Device as Dev,
)
from tests.server.incident_factory import (
    Sessions,
    at,
    feed,
    feed_each,
    incidents_of,
    intervals,
    secs,
    timeline_of,
    tracker,
    transients_of,
)


async def add_command(
    sessions: Sessions,
    device_id: str,
    issuer: str,
    issued: float,
    *,
    state: str = "succeeded",
    finished: float | None = None,
) -> str:
    """A command a person sent (the row the command service would have written)."""
    async with sessions() as session:
        if await session.scalar(select(users.User.id).where(users.User.name == issuer)) is None:
            await users.create_user(session, issuer, Role.TECHNICIAN, actor="test")
        command_id = f"cmd-{device_id}-{int(issued)}"
        session.add(
            Command(
                id=command_id,
                device_id=device_id,
                action="printer.clear_jam",
                args={},
                issuer=issuer,
                state=state,
                issued_at=at(issued),
                expires_at=at(issued + 60),
                deadline_at=at(issued + 60),
                finished_at=None if finished is None else at(finished),
                signed="{}",
            )
        )
        await session.commit()
    return command_id


# -- debounce ------------------------------------------------------------------------------------


async def test_a_fault_clearing_within_the_debounce_is_transient_and_opens_no_incident(
    sessions: Sessions,
) -> None:
    inc = tracker()
    dev = Dev("deb-1")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.cleared(130))
    await inc.sweep(sessions, now=at(600))
    assert await incidents_of(sessions, dev.id) == []
    (transient,) = await transients_of(sessions, dev.id)
    assert (transient.code, secs(transient.raised_at), secs(transient.cleared_at)) == ("E1", 100, 130)
    assert await intervals(sessions, dev.id) == [
        ("running", 0, 100),
        ("down", 100, 130),
        ("running", 130, None),
    ]


async def test_a_fault_outlasting_the_debounce_opens_an_incident_once_the_window_passed(
    sessions: Sessions,
) -> None:
    inc = tracker()
    dev = Dev("deb-2")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100))
    await inc.sweep(sessions, now=at(150))
    assert await incidents_of(sessions, dev.id) == []  # still inside the window
    await inc.sweep(sessions, now=at(161))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.kind, incident.status, incident.fault_code, incident.effect) == (
        "fault",
        "open",
        "E1",
        "down",
    )
    assert (secs(incident.t_fault), secs(incident.t_detect)) == (100, 160)
    assert await transients_of(sessions, dev.id) == []


async def test_a_later_message_of_the_device_also_opens_the_incident(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("deb-3")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.event(200, "consumable.low", code="T"))
    (incident,) = await incidents_of(sessions, dev.id)
    assert secs(incident.t_detect) == 160


# -- one incident per episode, channels -------------------------------------------------------------


async def test_overlapping_faults_join_one_incident_and_restore_when_all_cleared(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("ovl-1")
    await feed_each(
        sessions,
        inc,
        dev.status(0),
        dev.raised(100, "A"),
        dev.raised(200, "B", effect="degraded"),
        dev.raised(250, "C"),
        dev.cleared(300, "A"),
        dev.cleared(320, "C"),
        dev.cleared(400, "B"),
    )
    (incident,) = await incidents_of(sessions, dev.id)
    assert incident.codes == ["A", "B", "C"]
    assert (secs(incident.t_fault), secs(incident.t_restored)) == (100, 400)
    assert (incident.status, incident.channel, incident.resolved_by) == ("resolved", "auto", "server")
    assert secs(incident.t_resolved) == pytest.approx(400.05)
    assert await intervals(sessions, dev.id) == [
        ("running", 0, 100),
        ("down", 100, 320),
        ("degraded", 320, 400),
        ("running", 400, None),
    ]
    kinds = [entry.kind for entry in await timeline_of(sessions, incident.id)]
    assert kinds == ["opened", "fault.joined", "fault.joined", "restored", "resolved"]


async def test_cleared_after_a_technicians_command_resolves_remote(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("rem-1")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.event(170, "consumable.low"))
    command_id = await add_command(sessions, dev.id, "tina", 200, finished=221)
    await feed_each(sessions, inc, dev.cleared(220))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.status, incident.channel) == ("resolved", "remote")
    assert incident.remote_used
    assert (secs(incident.t_ack), secs(incident.t_respond), secs(incident.t_resolved)) == (200, 200, 221)
    entries = await timeline_of(sessions, incident.id)
    command = next(e for e in entries if e.kind == "command")
    assert (command.actor, command.detail["command_id"]) == ("user:tina", command_id)
    assert entries[-1].detail["evidence"] == [command_id]


async def test_the_channel_waits_for_a_command_still_running_when_the_fault_clears(
    sessions: Sessions,
) -> None:
    inc = tracker()
    dev = Dev("rem-2")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.event(170, "consumable.low"))
    command_id = await add_command(sessions, dev.id, "tom", 200, state="accepted")
    await feed_each(sessions, inc, dev.cleared(220))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.status, incident.t_restored is not None) == ("acknowledged", True)
    async with sessions() as session:
        command = await session.get(Command, command_id)
        assert command is not None
        command.state, command.finished_at = "succeeded", at(225)
        await session.commit()
    await inc.sweep(sessions, now=at(230))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.status, incident.channel, secs(incident.t_resolved)) == ("resolved", "remote", 225)


async def test_a_failed_command_leaves_the_resolution_to_a_person(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("rem-3")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.event(170, "consumable.low"))
    await add_command(sessions, dev.id, "tom", 200, state="failed", finished=201)
    await feed_each(sessions, inc, dev.cleared(220))
    await inc.sweep(sessions, now=at(300))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.status, incident.channel, secs(incident.t_restored)) == ("acknowledged", None, 220)


# -- reopen -------------------------------------------------------------------------------------------


async def test_the_same_fault_within_the_reopen_window_after_the_restore_reopens_the_incident(
    sessions: Sessions,
) -> None:
    """(Later recurrences: tests/server/test_incidents_reopen.py.)"""
    inc = tracker()
    dev = Dev("rep-1")
    hour = 3600.0
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.cleared(400))
    (first,) = await incidents_of(sessions, dev.id)
    assert first.status == "resolved"
    await feed_each(sessions, inc, dev.raised(400 + 20 * hour), dev.cleared(20 * hour + 900))
    (again,) = await incidents_of(sessions, dev.id)
    assert again.id == first.id
    assert (again.reopened, again.status, again.channel, again.repeat_of) == (1, "resolved", "auto", None)
    assert len(again.episodes) == 2
    assert (secs(again.t_fault), secs(again.t_restored)) == (100, 20 * hour + 900)
    kinds = [entry.kind for entry in await timeline_of(sessions, first.id)]
    assert kinds.count("reopened") == 1


async def test_another_fault_code_after_resolution_is_a_new_incident(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("rep-2")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100, "A"), dev.cleared(400, "A"))
    await feed_each(sessions, inc, dev.raised(1000, "B"), dev.cleared(1400, "B"))
    assert [i.codes for i in await incidents_of(sessions, dev.id)] == [["A"], ["B"]]


# -- presence -----------------------------------------------------------------------------------------


async def test_offline_past_the_grace_opens_an_offline_incident_and_records_unknown(
    sessions: Sessions,
) -> None:
    inc = tracker()
    dev = Dev("off-1")
    await feed_each(sessions, inc, dev.status(0), dev.status(1000, online=False, state=None, received=1000))
    await inc.sweep(sessions, now=at(1200))
    assert await incidents_of(sessions, dev.id) == []
    assert await intervals(sessions, dev.id) == [("running", 0, None)]
    await inc.sweep(sessions, now=at(1301))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.kind, secs(incident.t_fault), secs(incident.t_detect)) == ("offline", 1000, 1300)
    assert await intervals(sessions, dev.id) == [("running", 0, 1000), ("unknown", 1000, None)]
    # back after a power loss: the agent restarted, so the time it was off stays unknown
    await feed_each(
        sessions,
        inc,
        dev.event(3000, "agent.started", received=3001),
        dev.status(3000.5, received=3001.5),
    )
    assert await intervals(sessions, dev.id) == [
        ("running", 0, 1000),
        ("unknown", 1000, 3000),
        ("running", 3000, None),
    ]
    await inc.sweep(sessions, now=at(3400))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.status, incident.channel, incident.external) == ("resolved", "auto", False)
    assert (secs(incident.t_restored), secs(incident.t_resolved)) == (3001, 3301)


async def test_a_flapping_link_opens_one_offline_incident(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("flap-1")
    await feed_each(sessions, inc, dev.status(0))
    for k in range(4):
        base = 1000 + k * 500
        await feed_each(sessions, inc, dev.status(base, online=False, state=None))
        await inc.sweep(sessions, now=at(base + 350))
        await feed_each(sessions, inc, dev.status(base + 400))
        await inc.sweep(sessions, now=at(base + 450))
    for k in range(10):  # short drops never count
        base = 5000 + k * 100
        await feed_each(sessions, inc, dev.status(base, online=False, state=None), dev.status(base + 30))
    await inc.sweep(sessions, now=at(9000))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (secs(incident.t_fault), secs(incident.t_restored), incident.status) == (
        1000.05,
        2900.05,
        "resolved",
    )
    assert incident.external  # the agent kept running: the connection was lost


# -- priority -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_crit", "site_crit", "customer_crit", "severity", "expected"),
    [
        (None, None, None, "error", 2),  # no customer: criticality 3
        (None, None, 5, "error", 1),
        (None, 1, 5, "error", 3),  # the site's criticality wins over the customer's
        (4, 1, 5, "error", 2),  # the device's wins over both
        (None, None, 2, "critical", 2),
    ],
)
async def test_priority_follows_the_matrix(
    sessions: Sessions,
    device_crit: int | None,
    site_crit: int | None,
    customer_crit: int | None,
    severity: str,
    expected: int,
) -> None:
    inc = tracker()
    dev = Dev("prio-1")
    await feed(sessions, inc, dev.status(0))
    if customer_crit is not None:
        async with sessions() as session:
            customer = Customer(name="Hospital", criticality=customer_crit, cost_per_dispatch=0)
            session.add(customer)
            await session.flush()
            site = Site(customer_id=customer.id, name="ER", criticality=site_crit)
            session.add(site)
            await session.flush()
            device = await session.get(Device, dev.id)
            assert device is not None
            device.customer_id, device.site_id = customer.id, site.id
            await session.commit()
    if device_crit is not None:
        async with sessions() as session:
            device = await session.get(Device, dev.id)
            assert device is not None
            device.criticality = device_crit
            await session.commit()
    await feed_each(sessions, inc, dev.raised(100, severity=severity), dev.event(200, "consumable.low"))
    (incident,) = await incidents_of(sessions, dev.id)
    assert incident.priority == expected


# -- clock skew ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("skew", [7200.0, -7200.0])
async def test_a_device_clock_two_hours_off_gives_no_negative_durations(
    sessions: Sessions, skew: float
) -> None:
    inc = tracker()
    dev = Dev("skew-1", skew=skew)
    await feed_each(
        sessions, inc, dev.status(0), dev.raised(100), dev.event(200, "consumable.low"), dev.cleared(400)
    )
    (incident,) = await incidents_of(sessions, dev.id)
    assert incident.t_fault <= incident.t_detect <= incident.t_resolved  # type: ignore[operator]
    assert incident.t_fault <= incident.t_restored  # type: ignore[operator]
    assert secs(incident.t_fault) == pytest.approx(100, abs=0.1)
    assert secs(incident.t_restored) == pytest.approx(400, abs=0.1)
    spans = await intervals(sessions, dev.id)
    assert all(end is None or end >= start for _, start, end in spans)
    assert [state for state, _, _ in spans] == ["running", "down", "running"]


async def test_a_device_clock_ahead_without_a_birth_status_is_clamped_to_arrival(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("skew-2", skew=7200.0)
    await feed_each(sessions, inc, dev.raised(100), dev.event(200, "consumable.low"))
    (incident,) = await incidents_of(sessions, dev.id)
    assert incident.t_fault <= incident.t_detect
    assert incident.t_detect <= utcnow() + timedelta(days=3650)


# -- late data ----------------------------------------------------------------------------------------


async def test_late_data_rebuilds_intervals_and_incident_times_from_the_history(sessions: Sessions) -> None:
    """A device loses its link at 1000 while running; during the outage a jam stops it at 1500
    and is cleared at 2500; the agent buffers all of it and uploads it when back at 4000."""
    inc = tracker()
    dev = Dev("late-1")
    await feed_each(sessions, inc, dev.status(0), dev.status(1000, online=False, state=None, received=1000))
    await inc.sweep(sessions, now=at(2000))
    before = await intervals(sessions, dev.id)
    assert before == [("running", 0, 1000), ("unknown", 1000, None)]
    assert [i.kind for i in await incidents_of(sessions, dev.id)] == ["offline"]

    await feed(
        sessions,
        inc,
        dev.raised(1500, received=4000),
        dev.state(1500.1, "down", received=4000.01),
        dev.cleared(2500, received=4000.02),
        dev.state(2500, "running", received=4000.03),
        dev.status(3999, received=4000.1),
    )
    assert await intervals(sessions, dev.id) == [
        ("running", 0, 1500),
        ("down", 1500, 2500),
        ("running", 2500, None),
    ]
    fault, offline = sorted(await incidents_of(sessions, dev.id), key=lambda i: i.kind)
    assert fault.kind == "fault"
    assert (secs(fault.t_fault), secs(fault.t_restored)) == (1500, 2500)
    assert secs(fault.t_detect) == 4000  # the server learned of it on upload
    assert (fault.status, fault.channel, secs(fault.t_resolved)) == ("resolved", "auto", 4000.03)
    await inc.sweep(sessions, now=at(4400))
    (offline,) = [i for i in await incidents_of(sessions, dev.id) if i.kind == "offline"]
    assert (offline.status, offline.external) == ("resolved", True)  # a network loss, not the equipment


async def test_a_late_clear_inside_the_window_turns_an_incident_into_a_transient_fault(
    sessions: Sessions,
) -> None:
    inc = tracker()
    dev = Dev("late-2")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100))
    await inc.sweep(sessions, now=at(200))
    assert len(await incidents_of(sessions, dev.id)) == 1
    await feed(sessions, inc, dev.cleared(130, received=250))  # it had cleared within 30 s
    assert await incidents_of(sessions, dev.id) == []
    assert [t.code for t in await transients_of(sessions, dev.id)] == ["E1"]


async def test_a_rebuild_reproduces_what_ingest_derived(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("rb-1")
    await feed_each(
        sessions,
        inc,
        dev.status(0),
        dev.raised(100, "A"),
        dev.raised(150, "B", effect="degraded"),
        dev.cleared(300, "A"),
        dev.cleared(350, "B"),
        dev.raised(1000, "C"),
        dev.cleared(1020, "C"),
        dev.event(1100, "maintenance.started", data={"planned_end": at(1200).isoformat()}),
        dev.event(1300, "maintenance.ended"),
    )
    await inc.sweep(sessions, now=at(2000))
    spans = await intervals(sessions, dev.id)
    before = [
        (i.id, i.t_fault, i.t_detect, i.t_restored, i.t_resolved, i.codes)
        for i in await incidents_of(sessions, dev.id)
    ]
    entries = len(await timeline_of(sessions, before[0][0]))
    async with sessions() as session:
        await inc.rebuild(session, dev.id, now=at(2000).timestamp())
        await session.commit()
    assert await intervals(sessions, dev.id) == spans
    assert spans[-3:] == [("maintenance", 1100, 1200), ("down", 1200, 1300), ("running", 1300, None)]
    after = [
        (i.id, i.t_fault, i.t_detect, i.t_restored, i.t_resolved, i.codes)
        for i in await incidents_of(sessions, dev.id)
    ]
    assert after == before
    assert len(await timeline_of(sessions, before[0][0])) == entries  # nothing moved: nothing noted
    assert [t.code for t in await transients_of(sessions, dev.id)] == ["C"]


async def test_a_failure_in_incident_processing_keeps_the_batch_and_marks_a_rebuild(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    inc = tracker()
    dev = Dev("fail-1")

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(inc, "process", broken)
    await feed(sessions, inc, dev.status(0), dev.raised(100))
    async with sessions() as session:
        tracker_row = await session.get(StateTracker, dev.id)
        assert tracker_row is None or tracker_row.dirty
        assert await session.scalar(select(Device.id).where(Device.id == dev.id)) == dev.id
    monkeypatch.undo()
    await inc.sweep(sessions, now=at(500))
    (incident,) = await incidents_of(sessions, dev.id)
    assert secs(incident.t_fault) == 100


async def test_a_fault_catalogue_gives_the_default_effect(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("cat-1")
    faults = [
        {"code": "TONER_SENSOR", "meaning": "sensor", "severity": "warning", "effect": "degraded"},
        {"code": "DOOR_OPEN", "meaning": "door", "severity": "error", "effect": "none"},
    ]
    await feed_each(
        sessions,
        inc,
        dev.inventory(0, faults=faults),
        dev.status(1),
        dev.raised(100, "TONER_SENSOR", effect=None, severity="warning"),
        dev.raised(110, "DOOR_OPEN", effect=None),
        dev.raised(120, "UNLISTED", effect=None, severity="warning"),
        dev.event(300, "consumable.low"),
    )
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.codes, incident.effect) == (["TONER_SENSOR"], "degraded")


async def test_incident_rows_never_overlap_per_device(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("ovr-1")
    await feed_each(
        sessions,
        inc,
        dev.status(0),
        dev.raised(100),
        dev.state(101, "down"),
        dev.status(500, online=False, state=None),
    )
    await inc.sweep(sessions, now=at(900))
    await feed(
        sessions,
        inc,
        dev.cleared(600, received=1000),
        dev.state(601, "running", received=1000.1),
        dev.status(999, received=1000.2),
    )
    spans = await intervals(sessions, dev.id)
    for (_, _, end), (_, start, _) in itertools.pairwise(spans):
        assert end == start
    assert spans == [("running", 0, 100), ("down", 100, 601), ("running", 601, None)]
    incidents = {i.kind: i for i in await incidents_of(sessions, dev.id)}
    assert secs(incidents["fault"].t_restored) == 601
    assert "offline" in incidents  # away 500 s: an offline incident too, on its own


# -- people and the server -------------------------------------------------------------------------


async def _principal(sessions: Sessions, name: str) -> users.Principal:
    async with sessions() as session:
        user = await users.create_user(session, name, Role.TECHNICIAN, actor="test")
        return users.Principal(user.id, user.name, Role.TECHNICIAN)


async def test_a_person_resolving_early_keeps_the_resolution_and_the_restore_is_still_recorded(
    sessions: Sessions,
) -> None:
    from server.incidents import service  # noqa: PLC0415

    inc = tracker()
    dev = Dev("ppl-1")
    who = await _principal(sessions, "petra")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.event(200, "x.y"))
    (incident,) = await incidents_of(sessions, dev.id)
    async with sessions() as session:
        await service.resolve(session, incident.id, who, channel=None, cause="c", resolution="r", visits=1)
    await feed_each(sessions, inc, dev.cleared(900))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.status, incident.channel, incident.resolved_by) == ("resolved", "field", "user:petra")
    assert secs(incident.t_restored) == 900
    # a new fault joining the episode a person declared resolved reopens it
    await feed_each(sessions, inc, dev.raised(1000), dev.raised(1010, "NEW"), dev.event(1100, "x.y"))
    incidents = await incidents_of(sessions, dev.id)
    assert [(i.id, i.status, i.reopened) for i in incidents] == [(incident.id, "open", 1)]


async def test_after_a_person_reopens_the_server_no_longer_resolves_by_itself(sessions: Sessions) -> None:
    from server.incidents import service  # noqa: PLC0415

    inc = tracker()
    dev = Dev("ppl-2")
    who = await _principal(sessions, "paul")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.cleared(400))
    (incident,) = await incidents_of(sessions, dev.id)
    assert incident.channel == "auto"
    async with sessions() as session:
        await service.reopen(session, incident.id, who, reason="customer says it still jams")
    await feed_each(sessions, inc, dev.raised(500), dev.cleared(800))
    await inc.sweep(sessions, now=at(900))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.status, incident.reopened, incident.auto_resolve) == ("open", 1, False)
    assert secs(incident.t_restored) == 800
