"""Similar past incidents beside the articles on the incident page (issue 15, item 5): resolved
incidents in the caller's scope sharing a fault code, the same model first, each with how it
was solved and why it is shown; another customer's incident never; a customer sees none."""

from __future__ import annotations

import re
from datetime import timedelta

from server.db.models import Device, Incident
from server.db.types import utcnow
from tests.web.support import Console, sign_in


async def _incident(console: Console, device_id: str, *, resolved: bool, age_h: float, note: str = "") -> int:
    when = utcnow() - timedelta(hours=age_h)
    async with console.runtime.sessions() as session:
        incident = Incident(
            device_id=device_id, kind="fault", severity="error", effect="down", fault_code="SIM-42",
            codes=["SIM-42"], t_fault=when, t_detect=when, cause=f"cause {note}", resolution=f"fix {note}",
        )  # fmt: skip
        if resolved:
            incident.status, incident.channel = "resolved", "remote"
            incident.t_restored = incident.t_resolved = when + timedelta(minutes=30)
        session.add(incident)
        await session.commit()
        return incident.id


async def test_the_incident_page_shows_resolved_incidents_like_it_with_why(console: Console) -> None:
    mine = console.seeded.devices[console.seeded.customers[0]]
    async with console.runtime.sessions() as session:
        models = {d: (await session.get(Device, d)).model for d in mine}  # type: ignore[union-attr]
    device = mine[0]
    same = next(d for d in mine[1:] if models[d] == models[device])
    other = next(d for d in mine[1:] if models[d] != models[device])
    theirs = console.seeded.devices[console.seeded.customers[1]][0]
    current = await _incident(console, device, resolved=False, age_h=0)
    older_same = await _incident(console, same, resolved=True, age_h=48, note="old same")
    newer_other = await _incident(console, other, resolved=True, age_h=5, note="new other")
    hidden = await _incident(console, theirs, resolved=True, age_h=1, note="theirs")
    await sign_in(console.client, "tina")
    page = (await console.client.get(f"/incidents/{current}")).text
    shown = [int(i) for i in re.findall(r'data-similar="(\d+)"', page)]
    assert shown == [older_same, newer_other]  # the same model first, then another model
    assert hidden not in shown
    assert f"same fault code SIM-42 on the same model ({models[device]})" in page
    assert "fix old same" in page
    await sign_in(console.client, "carl")  # a customer: guided steps, no suggestions
    assert "data-similar" not in (await console.client.get(f"/incidents/{current}")).text
