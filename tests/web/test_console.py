"""The remote session console over HTTP (no browser, no broker): the action catalogue becomes
forms with the right inputs and policy, bad arguments and forbidden actions are refused before
anything is signed, the close form and the report download. Running a command for real (agent,
broker, streamed output) is in test_browser.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

import protocol
from certs import PkiDir
from server.db.models import Device
from server.errors import InvalidInput
from server.web.console import action_forms, arg_fields, parse_args
from tests.support.server import V1, api_client, bearer, server_settings
from tests.web.seed import seed
from tests.web.support import Console, open_incident, sign_in, token_for


@pytest.fixture
async def console(db_url: str, pki: PkiDir) -> AsyncIterator[Console]:
    """The seeded console with a signing key (no broker): the policy is checked before signing."""
    settings = server_settings(db_url, pki=pki, incidents={"enabled": False})
    async with api_client(settings) as (client, runtime):
        yield Console(client, runtime, await seed(runtime))


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "maxLength": 64},
        "lines": {"type": "integer", "minimum": 1, "maximum": 500},
        "ratio": {"type": "number"},
        "deep": {"type": "boolean"},
        "mode": {"type": "string", "enum": ["offset", "gain", "full"]},
    },
    "required": ["path"],
    "additionalProperties": False,
}


def _action(name: str, policy: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    info = protocol.ActionInfo(
        name=name,
        description=f"{name} for the test",
        args_schema=schema or {},
        policy=protocol.PolicyDecision(policy),
    )
    return info.model_dump(mode="json")


CATALOGUE = [
    _action("logs.tail", "allowed", SCHEMA),
    _action("selftest", "allowed"),
    _action("service.restart", "forbidden"),
    _action("printer.clear_jam", "needs_consent"),
]


def test_each_schema_type_gets_its_input_and_hints() -> None:
    fields = {f.name: f for f in arg_fields(SCHEMA)}
    assert next(f.name for f in arg_fields(SCHEMA)) == "path"  # required first
    assert (fields["path"].kind, fields["path"].required, fields["path"].attrs) == (
        "text",
        True,
        {"maxlength": "64"},
    )
    assert fields["lines"].kind == "number"
    assert fields["lines"].attrs == {"step": "1", "min": "1", "max": "500"}
    assert fields["ratio"].attrs == {"step": "any"}
    assert fields["deep"].kind == "bool"
    assert (fields["mode"].kind, fields["mode"].choices) == ("enum", ["offset", "gain", "full"])
    assert not fields["lines"].required
    assert fields["lines"].input_name == "arg.lines"


def test_form_values_become_typed_args_and_bad_ones_name_the_argument() -> None:
    form = {"csrf": "x", "arg.path": "/var/log/a", "arg.lines": "20", "arg.deep": "false", "arg.ratio": ""}
    assert parse_args(form, SCHEMA) == {"path": "/var/log/a", "lines": 20, "deep": False}
    for bad, field in (
        ({"arg.path": "p", "arg.lines": "ten"}, "args.lines"),
        ({"arg.path": "p", "arg.lines": "0"}, "args.lines"),  # below the minimum
        ({"arg.lines": "5"}, "args.path"),  # required
        ({"arg.path": "p", "arg.mode": "fast"}, "args.mode"),
        ({"arg.path": "x" * 65}, "args.path"),
        ({"arg.path": "p", "arg.other": "1"}, "args.other"),
    ):
        with pytest.raises(InvalidInput) as caught:
            parse_args(bad, SCHEMA)
        assert caught.value.field == field, (bad, caught.value.message)
        assert caught.value.message.startswith(field), caught.value.message


def test_policy_decides_which_forms_may_run() -> None:
    listed = action_forms({"agent": {"catalogue": CATALOGUE}}, session_blocked=None, consent_given=False)
    assert [f.name for f in listed] == ["logs.tail", "selftest", "printer.clear_jam", "service.restart"]
    forms = {f.name: f for f in listed}
    assert forms["selftest"].blocked is None
    assert "forbids" in (forms["service.restart"].blocked or "")
    assert "consent" in (forms["printer.clear_jam"].blocked or "")
    consented = action_forms({"agent": {"catalogue": CATALOGUE}}, session_blocked=None, consent_given=True)
    assert {f.name for f in consented if f.blocked is None} == {"logs.tail", "selftest", "printer.clear_jam"}
    closed = action_forms({"agent": {"catalogue": CATALOGUE}}, session_blocked="closed", consent_given=True)
    assert {f.blocked for f in closed if f.policy != "forbidden"} == {"closed"}
    assert action_forms({}, session_blocked=None, consent_given=False) == []


async def _session_on_a_device(console: Console) -> tuple[str, str, str, int]:
    """tina opens a session from an incident of a device advertising CATALOGUE (no broker: the
    device is unattended, so the session is active at once). Returns csrf, session, device, incident."""
    device_id = console.seeded.devices[console.seeded.customers[0]][0]
    async with console.runtime.sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        device.inventory = {"agent": {"catalogue": CATALOGUE, "attended": False}}
        await session.commit()
    incident = await open_incident(console, device_id)
    csrf = await sign_in(console.client, "tina")
    opened = await console.client.post(f"/incidents/{incident}/session", data={"csrf": csrf, "reason": "jam"})
    assert opened.status_code == 303, opened.text
    found = re.fullmatch(r"/sessions/(ses_[\w-]+)", opened.headers["location"])
    assert found, opened.headers["location"]
    return csrf, found.group(1), device_id, incident


async def test_the_session_console_page_shows_catalogue_policy_and_header(console: Console) -> None:
    _, session_id, device_id, incident = await _session_on_a_device(console)
    page = await console.client.get(f"/sessions/{session_id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert 'data-state="active"' in html
    assert f'href="/devices/{device_id}"' in html
    assert f'href="/incidents/{incident}"' in html
    assert 'id="time-left"' in html
    forms = dict(re.findall(r'data-action="([^"]+)".*?<fieldset ([^>]*)>', html, re.S))
    assert set(forms) == {"logs.tail", "selftest", "service.restart", "printer.clear_jam"}
    assert "disabled" in forms["service.restart"]
    assert "disabled" in forms["printer.clear_jam"]  # needs consent, none given
    assert "disabled" not in forms["selftest"]
    assert re.search(r'<input id="[^"]+-path" name="arg.path" type="text" required maxlength="64">', html)
    assert re.search(r'name="arg.lines" type="number" step="1" min="1" max="500"', html)
    assert "Request consent" in html
    assert 'role="log" aria-live="polite"' in html
    assert "/static/session.js" in html
    incident_page = await console.client.get(f"/incidents/{incident}")
    assert f'href="/sessions/{session_id}"' in incident_page.text  # the incident links its session


async def test_bad_arguments_and_forbidden_actions_are_refused_before_signing(console: Console) -> None:
    csrf, session_id, device_id, _ = await _session_on_a_device(console)
    as_json = {"Accept": "application/json"}
    bad = await console.client.post(
        f"/sessions/{session_id}/run",
        data={"csrf": csrf, "action": "logs.tail", "arg.path": "/var/log/x", "arg.lines": "many"},
        headers=as_json,
    )
    assert bad.status_code == 422
    assert bad.json()["field"] == "args.lines"
    forbidden = await console.client.post(
        f"/sessions/{session_id}/run", data={"csrf": csrf, "action": "service.restart"}, headers=as_json
    )
    assert forbidden.status_code == 403
    assert "forbids" in forbidden.json()["detail"]
    consent = await console.client.post(
        f"/sessions/{session_id}/run", data={"csrf": csrf, "action": "printer.clear_jam"}, headers=as_json
    )
    assert consent.status_code == 409
    assert "consent" in consent.json()["detail"]
    stale = await console.client.post(
        f"/sessions/{session_id}/run", data={"csrf": "stale", "action": "selftest"}, headers=as_json
    )
    assert stale.status_code == 403
    token = await token_for(console, "tina")
    listed = await console.client.get(f"{V1}/devices/{device_id}/commands", headers=bearer(token))
    assert listed.json()["total"] == 0  # nothing was signed


async def test_close_the_session_and_download_its_report(console: Console) -> None:
    csrf, session_id, device_id, _ = await _session_on_a_device(console)
    closed = await console.client.post(
        f"/sessions/{session_id}/close", data={"csrf": csrf, "outcome": "looked, no fault", "fixed": "no"}
    )
    assert closed.status_code == 303, closed.text
    page = await console.client.get(f"/sessions/{session_id}")
    assert 'data-state="closed"' in page.text
    assert "looked, no fault (not fixed)" in page.text
    assert "Close session" not in page.text
    assert "the session is closed" in page.text  # the forms say why they are disabled
    report = await console.client.get(f"/sessions/{session_id}/report.md")
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/markdown")
    assert report.headers["content-disposition"].startswith("attachment;")
    assert device_id in report.text
    assert "looked, no fault" in report.text
    again = await console.client.post(f"/sessions/{session_id}/close", data={"csrf": csrf, "outcome": "x"})
    assert again.status_code == 409  # as the API: already closed


async def test_ops_reads_the_console_but_cannot_run(console: Console) -> None:
    _, session_id, _, _ = await _session_on_a_device(console)
    await console.client.post("/logout", data={"csrf": (await sign_in(console.client, "tina"))})
    await sign_in(console.client, "olga")
    page = await console.client.get(f"/sessions/{session_id}")
    assert page.status_code == 200
    assert "role &#39;ops&#39; may not send commands" in page.text
    assert "Close session" not in page.text
    await sign_in(console.client, "carl")
    assert (await console.client.get(f"/sessions/{session_id}")).status_code == 403
