"""The remote session console over HTTP (no browser, no broker): the action catalogue becomes
forms with the right inputs and policy, bad arguments and forbidden actions are refused before
anything is signed, the close form and the report download, and a ``file.fetch`` file offered
for download only when intact and only to whom the API gives it (the device's replies are
written as the ingest would). Running a command for real (agent, broker, streamed output) is in
test_browser.py."""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

import protocol
from certs import PkiDir
from server.db.models import Device, Role
from server.errors import InvalidInput
from server.ingest import BatchWriter
from server.web.console import action_forms, arg_fields, file_size, parse_args
from tests.server import factory
from tests.support.server import V1, api_client, bearer, create_token, server_settings
from tests.web.seed import PASSWORD, seed
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


# -- file.fetch downloads ----------------------------------------------------------------------

RAW_CHUNK = 6144  # the agent's chunk size (agent.actions.files.RAW_CHUNK)


async def _fetch_session(console: Console) -> tuple[str, str, str]:
    """tina's session on a device advertising ``file.fetch``: csrf, session id, device id."""
    device_id = console.seeded.devices[console.seeded.customers[0]][0]
    catalogue = [
        _action("file.fetch", "allowed", {"type": "object", "properties": {"path": {"type": "string"}}})
    ]
    async with console.runtime.sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        device.inventory = {"agent": {"catalogue": catalogue, "attended": False}}
        await session.commit()
    incident = await open_incident(console, device_id)
    csrf = await sign_in(console.client, "tina")
    opened = await console.client.post(
        f"/incidents/{incident}/session", data={"csrf": csrf, "reason": "logs"}
    )
    assert opened.status_code == 303, opened.text
    return csrf, opened.headers["location"].rsplit("/", 1)[-1], device_id


async def _fetched(
    console: Console,
    csrf: str,
    session_id: str,
    device_id: str,
    path: str,
    sent: bytes,
    *,
    claimed: bytes,
    seq: int = 1,
) -> str:
    """Run ``file.fetch path`` from the console, then the device's replies (numbered from
    ``seq``, unique per device) as the ingest stores them: ``sent`` in base64 chunks, and a
    result claiming the size and sha256 of ``claimed``."""
    run = await console.client.post(
        f"/sessions/{session_id}/run",
        data={"csrf": csrf, "action": "file.fetch", "arg.path": path},
        headers={"Accept": "application/json"},
    )
    assert run.status_code == 201, run.text
    assert run.json()["file"] is True  # the page's script counts the chunks instead of showing base64
    command_id: str = run.json()["id"]
    parts = [sent[i : i + RAW_CHUNK] for i in range(0, len(sent), RAW_CHUNK)]
    chunks = -(-len(claimed) // RAW_CHUNK)
    replies = [factory.reply(device_id, seq, command_id, "accepted")]
    replies += [
        factory.reply(
            device_id, seq + 1 + n, command_id, "output", output=base64.b64encode(part).decode(), chunk=n
        )
        for n, part in enumerate(parts)
    ]
    data = {
        "path": path,
        "size": len(claimed),
        "sha256": hashlib.sha256(claimed).hexdigest(),
        "chunks": chunks,
    }
    replies.append(factory.reply(device_id, seq + 1 + len(parts), command_id, "result", ok=True, data=data))
    outcome = await BatchWriter(console.runtime.sessions).write([factory.decoded(r) for r in replies])
    console.runtime.commands.notify(outcome.commands)
    return command_id


async def test_a_fetched_file_downloads_intact_and_only_for_whom_the_api_allows(console: Console) -> None:
    csrf, session_id, device_id = await _fetch_session(console)
    content = b"".join(f"2026-11-21T06:{i % 60:02d}:00Z fuser ok, {i} pages\n".encode() for i in range(600))
    assert len(content) > 2 * RAW_CHUNK  # several chunks, re-assembled in order
    command_id = await _fetched(
        console, csrf, session_id, device_id, "/var/log/printer.log", content, claimed=content
    )
    digest = hashlib.sha256(content).hexdigest()

    page = await console.client.get(f"/sessions/{session_id}")
    assert page.status_code == 200, page.text
    link = f'<a class="button download" href="/commands/{command_id}/file" download="printer.log">'
    assert link + "Download printer.log</a>" in page.text
    assert f'data-size="{len(content)}" data-sha256="{digest}"' in page.text
    assert html_lib.escape(file_size(len(content))) in page.text
    download = await console.client.get(f"/commands/{command_id}/file")
    assert download.status_code == 200, download.text
    assert download.content == content
    assert hashlib.sha256(download.content).hexdigest() == digest
    assert download.headers["content-disposition"] == 'attachment; filename="printer.log"'
    assert download.headers["x-content-sha256"] == digest

    other_customer = console.seeded.customers[1]
    await create_token(console.runtime, "tom", Role.TECHNICIAN, assign=[other_customer], password=PASSWORD)
    # tom: a technician of another customer; carl: this device's customer user (no file access)
    for name in ("tom", "carl"):
        api = await console.client.get(
            f"{V1}/commands/{command_id}/file", headers=bearer(await token_for(console, name))
        )
        await sign_in(console.client, name)
        refused = await console.client.get(f"/commands/{command_id}/file")
        assert refused.status_code == api.status_code == 403, name  # the API's own answer
        assert content not in refused.content
        assert refused.headers["content-type"].startswith("text/html")  # an error page, not the file
    await sign_in(console.client, "olga")  # ops reads the session, sees the file's facts, no link
    as_ops = await console.client.get(f"/sessions/{session_id}")
    assert as_ops.status_code == 200
    assert f'data-sha256="{digest}"' in as_ops.text
    assert f'href="/commands/{command_id}/file"' not in as_ops.text
    assert "Only a technician or an admin downloads files." in as_ops.text
    assert (await console.client.get(f"/commands/{command_id}/file")).status_code == 403


async def test_an_incomplete_or_altered_file_says_why_instead_of_a_link(console: Console) -> None:
    csrf, session_id, device_id = await _fetch_session(console)
    content = bytes(range(256)) * 40  # 10240 bytes: two chunks
    incomplete = await _fetched(
        console, csrf, session_id, device_id, "/var/log/a.log", content[:RAW_CHUNK], claimed=content
    )
    altered_bytes = content[:RAW_CHUNK] + b"y" * (len(content) - RAW_CHUNK)
    altered = await _fetched(
        console, csrf, session_id, device_id, "/var/log/b.log", altered_bytes, claimed=content, seq=100
    )
    page = html_lib.unescape((await console.client.get(f"/sessions/{session_id}")).text)
    for command_id, why in (
        (incomplete, "the file is incomplete: 1 of 2 chunks missing (1)"),
        (altered, "the file does not match the device's checksum"),
    ):
        problem = re.search(rf'data-file-problem="{command_id}">No download: ([^<]+)</p>', page)
        assert problem, f"no reason shown for {command_id}"
        assert why in problem.group(1)
        assert f'href="/commands/{command_id}/file"' not in page
        answer = await console.client.get(f"/commands/{command_id}/file")
        assert answer.status_code == 409
        assert why in html_lib.unescape(answer.text)  # the error page gives the same reason


def test_file_sizes_read_for_people() -> None:
    assert file_size(512) == "512 bytes"
    assert file_size(12800) == "12.5 KiB (12,800 bytes)"
    assert file_size(3 * 1024 * 1024) == "3.0 MiB (3,145,728 bytes)"
