"""Guided self-resolution on SQLite and PostgreSQL: what customers and technicians are offered,
runs, and the ``customer`` resolution channel (server/guides, server/incidents/evidence.py)."""

from __future__ import annotations

import pytest

from server.base import users
from server.base.users import Principal
from server.db.models import (
    Customer,
    Device,
    Guide,
    GuideRun,
    Incident,
    IncidentEntry,
    Role,
    TechnicianAssignment,
)
from server.errors import InvalidInput, NotFound
from server.guides import service
from tests.server.incident_factory import Device as Dev
from tests.server.incident_factory import Sessions, at, feed_each, incidents_of, tracker


async def _people(sessions: Sessions, device_id: str) -> tuple[Principal, Principal, Principal]:
    """A technician, the device's customer user, and another customer's user."""
    async with sessions() as session:
        mine, other = Customer(name=f"c-{device_id}"), Customer(name=f"x-{device_id}")
        session.add_all([mine, other])
        await session.flush()
        device = await session.get(Device, device_id)
        assert device is not None
        device.customer_id, device.model = mine.id, "LX-9"
        tech = await users.create_user(session, f"t-{device_id}", Role.TECHNICIAN, actor="test")
        session.add(TechnicianAssignment(user_id=tech.id, customer_id=mine.id))
        await session.commit()
        return (
            Principal(user_id=tech.id, name=tech.name, role=Role.TECHNICIAN),
            Principal(user_id=9001, name="carla", role=Role.CUSTOMER, customer_id=mine.id),
            Principal(user_id=9002, name="xavier", role=Role.CUSTOMER, customer_id=other.id),
        )


async def _guides(sessions: Sessions, tech: Principal) -> tuple[int, int]:
    async with sessions() as session:
        safe = await service.create_guide(
            session, tech, fault_code="E1", model="LX-9", title="Clear the paper path",
            steps=[{"text": "Open tray 2"}, {"text": "Remove the sheet"}], customer_safe=True,
        )  # fmt: skip
        internal = await service.create_guide(
            session, tech, fault_code="E1", model=None, title="Reset the controller",
            steps=[{"text": "Run selftest", "action": "selftest"}], customer_safe=False,
        )  # fmt: skip
        await service.create_guide(
            session, tech, fault_code="E1", model="OTHER", title="Other model", steps=[{"text": "x"}], customer_safe=True
        )  # fmt: skip
        return safe.id, internal.id


async def test_customers_see_only_safe_authored_guides_technicians_also_past_resolutions(
    sessions: Sessions,
) -> None:
    inc = tracker()
    old, dev = Dev("gd-old"), Dev("gd-1")
    await feed_each(sessions, inc, old.status(0), old.raised(10), dev.status(0))
    await feed_each(sessions, inc, dev.raised(100))
    await inc.sweep(sessions, now=at(400))
    tech, carla, xavier = await _people(sessions, dev.id)
    safe, internal = await _guides(sessions, tech)
    (past,) = await incidents_of(sessions, old.id)
    async with sessions() as session:
        row = await session.get(Incident, past.id)
        assert row is not None
        row.status, row.channel, row.t_resolved = "resolved", "remote", at(50)
        row.resolution = "- reseated the fuser connector\n- ran selftest"
        await session.commit()
    (incident,) = await incidents_of(sessions, dev.id)
    async with sessions() as session:
        for_customer = await service.incident_guides(session, carla, incident.id)
        for_tech = await service.incident_guides(session, tech, incident.id)
        with pytest.raises(NotFound):  # another customer does not learn the incident exists
            await service.incident_guides(session, xavier, incident.id)
        with pytest.raises(InvalidInput, match="guide_id"):  # not customer-safe
            await service.start_run(session, carla, incident.id, internal)
    assert [g["id"] for g in for_customer] == [safe]
    assert [g["id"] for g in for_tech[:2]] == [safe, internal]
    [derived] = for_tech[2:]
    assert derived["source"] == f"incident:{past.id}"
    assert "resolution notes of incident" in derived["origin"]
    assert [s["text"] for s in derived["steps"]] == ["reseated the fuser connector", "ran selftest"]


async def test_the_fault_clearing_during_a_guide_run_resolves_as_customer(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("gd-2")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.event(170, "consumable.low"))
    tech, carla, _ = await _people(sessions, dev.id)
    safe, _internal = await _guides(sessions, tech)
    (incident,) = await incidents_of(sessions, dev.id)
    async with sessions() as session:
        run = await service.start_run(session, carla, incident.id, safe)
        run.started_at = at(180)  # in the incident's (simulated) time
        await session.commit()
        await service.record_step(session, carla, run.id, step=0, result="done", note_text="tray open")
        with pytest.raises(InvalidInput, match="step"):
            await service.record_step(session, carla, run.id, step=5, result="done")
        run_id = run.id
    await feed_each(sessions, inc, dev.cleared(220))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.status, incident.channel) == ("resolved", "customer")
    assert not incident.remote_used
    async with sessions() as session:
        stored = await session.get(GuideRun, run_id)
        guide = await session.get(Guide, safe)
        assert stored is not None
        assert guide is not None
        assert (stored.state, len(stored.steps_done)) == ("fixed", 1)
        assert (guide.use_count, guide.success_count) == (1, 1)


async def test_a_run_finished_as_fixed_after_the_clear_resolves_as_customer(sessions: Sessions) -> None:
    inc = tracker()
    dev = Dev("gd-3")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.event(170, "consumable.low"))
    tech, carla, _ = await _people(sessions, dev.id)
    safe, _ = await _guides(sessions, tech)
    (incident,) = await incidents_of(sessions, dev.id)
    async with sessions() as session:
        run = await service.start_run(session, carla, incident.id, safe)
        run.started_at = at(300)  # started after the clear below: only "fixed" explains it
        await session.commit()
        run_id = run.id
    async with sessions() as session:  # a person gave guidance meanwhile: the server will not say "auto"
        session.add(IncidentEntry(incident_id=incident.id, ts=at(200), kind="guidance", actor=tech.actor))
        await session.commit()
    await feed_each(sessions, inc, dev.cleared(220))
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.status, incident.t_restored is not None) == ("open", True)  # waits for a person
    async with sessions() as session:
        await service.finish_run(session, carla, run_id, fixed=True)
    (incident,) = await incidents_of(sessions, dev.id)
    assert (incident.status, incident.channel) == ("resolved", "customer")
