"""The sessions API and the command stream over HTTP (in-process app, SQLite and PostgreSQL):
SSE order and resume, output and file re-assembly, the Markdown report, error bodies."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any

import httpx
import pytest

import protocol
from certs import PkiDir
from server.db.models import Device, Role
from server.db.types import utcnow
from server.ingest import BatchWriter
from server.runtime import Runtime
from tests.server import factory as f
from tests.support.server import V1, api_client, bearer, create_token, server_settings

CATALOGUE = [{"name": n, "policy": "allowed"} for n in ("file.fetch", "selftest")]


def parse_sse(body: str) -> list[dict[str, Any]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            fields[key] = json.loads(value) if key == "data" else value
        if fields:
            events.append(fields)
    return events


async def write(runtime: Runtime, *replies: protocol.Reply) -> None:
    outcome = await BatchWriter(runtime.sessions).write([f.decoded(r) for r in replies])
    runtime.commands.notify(outcome.commands)


@pytest.fixture
async def app(db_url: str, pki: PkiDir) -> Any:
    async with api_client(server_settings(db_url, pki=pki)) as (client, runtime):
        async with runtime.sessions() as session:
            session.add(
                Device(
                    id="api-ses",
                    first_seen=utcnow(),
                    model="LX-9",
                    inventory={"agent": {"version": "1", "catalogue": CATALOGUE}},
                )
            )
            await session.commit()
        token = await create_token(runtime, "tina", Role.TECHNICIAN)
        yield client, runtime, bearer(token)


async def open_and_run(
    client: httpx.AsyncClient, auth: dict[str, str], action: str, **args: Any
) -> tuple[str, str]:
    opened = await client.post(
        f"{V1}/sessions", json={"device_id": "api-ses", "reason": "logs"}, headers=auth
    )
    assert opened.status_code == 201, opened.text
    session_id = opened.json()["id"]
    if opened.json()["state"] != "active":
        session_id = (await client.get(f"{V1}/sessions", params={"state": "active"}, headers=auth)).json()[
            "items"
        ][0]["id"]
    sent = await client.post(
        f"{V1}/sessions/{session_id}/commands", json={"action": action, "args": args}, headers=auth
    )
    assert sent.status_code == 201, sent.text
    return session_id, sent.json()["id"]


async def test_stream_is_in_device_order_resumable_and_the_file_is_checked(app: Any) -> None:
    client, runtime, auth = app
    content = bytes(range(256)) * 50  # 12800 bytes: three chunks of 6144 raw bytes
    parts = [base64.b64encode(content[i : i + 6144]).decode() for i in range(0, len(content), 6144)]
    _, command_id = await open_and_run(client, auth, "file.fetch", path="/var/log/app.log")
    data = {"path": "/var/log/app.log", "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
            "encoding": "base64", "chunks": len(parts)}  # fmt: skip
    dev = "api-ses"
    # arrival order differs from device order (QoS 1 redelivery): seq decides
    await write(runtime, f.reply(dev, 14, command_id, "output", output=parts[2], chunk=2),
                f.reply(dev, 10, command_id, "accepted"))  # fmt: skip
    await write(runtime, f.reply(dev, 12, command_id, "output", output=parts[0], chunk=0),
                f.reply(dev, 11, command_id, "progress", progress=0.1),
                f.reply(dev, 13, command_id, "output", output=parts[1], chunk=1),
                f.reply(dev, 13, command_id, "output", output=parts[1], chunk=1),  # a duplicate
                f.reply(dev, 15, command_id, "result", ok=True, data=data))  # fmt: skip
    stream = await client.get(f"{V1}/commands/{command_id}/stream", headers=auth)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(stream.text)
    assert [e["event"] for e in events] == [
        "accepted",
        "progress",
        "output",
        "output",
        "output",
        "result",
        "end",
    ]
    assert [e.get("id") for e in events] == ["10", "11", "12", "13", "14", "15", None]
    assert [e["data"].get("chunk") for e in events if e["event"] == "output"] == [0, 1, 2]
    assert events[-1]["data"]["state"] == "succeeded"
    resumed = parse_sse(
        (await client.get(f"{V1}/commands/{command_id}/stream", headers={**auth, "Last-Event-ID": "13"})).text
    )
    assert [e.get("id") for e in resumed] == ["14", "15", None]
    fetched = await client.get(f"{V1}/commands/{command_id}/file", headers=auth)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == content
    assert 'filename="app.log"' in fetched.headers["content-disposition"]
    assert fetched.headers["x-content-sha256"] == data["sha256"]


async def test_an_incomplete_or_altered_file_is_a_clear_409(app: Any) -> None:
    client, runtime, auth = app
    content = b"x" * 7000
    parts = [base64.b64encode(content[:6144]).decode(), base64.b64encode(content[6144:]).decode()]
    good = {"path": "/a", "size": len(content), "sha256": hashlib.sha256(content).hexdigest(), "chunks": 2}
    _, missing = await open_and_run(client, auth, "file.fetch", path="/a")
    await write(runtime, f.reply("api-ses", 20, missing, "output", output=parts[0], chunk=0),
                f.reply("api-ses", 21, missing, "result", ok=True, data=good))  # fmt: skip
    answer = await client.get(f"{V1}/commands/{missing}/file", headers=auth)
    assert answer.status_code == 409
    assert "incomplete: 1 of 2 chunks missing (1)" in answer.json()["error"]["message"]
    sid = (await client.get(f"{V1}/sessions", headers=auth)).json()["items"][0]["id"]
    altered = (
        await client.post(f"{V1}/sessions/{sid}/commands", json={"action": "file.fetch"}, headers=auth)
    ).json()["id"]
    await write(runtime, f.reply("api-ses", 30, altered, "output", output=parts[0], chunk=0),
                f.reply("api-ses", 31, altered, "output", output=base64.b64encode(b"y" * 856).decode(), chunk=1),
                f.reply("api-ses", 32, altered, "result", ok=True, data=good))  # fmt: skip
    answer = await client.get(f"{V1}/commands/{altered}/file", headers=auth)
    assert answer.status_code == 409
    assert "does not match the device's checksum" in answer.json()["error"]["message"]


async def test_output_report_and_errors(app: Any) -> None:
    client, runtime, auth = app
    session_id, command_id = await open_and_run(client, auth, "selftest")
    await write(runtime, f.reply("api-ses", 40, command_id, "output", output="fuser ok\n", chunk=0),
                f.reply("api-ses", 41, command_id, "output", output="drum ok\n", chunk=1))  # fmt: skip
    out = await client.get(f"{V1}/commands/{command_id}/output", headers=auth)
    assert out.text == "fuser ok\ndrum ok\n"
    unknown = await client.post(
        f"{V1}/sessions/{session_id}/commands", json={"action": "disk.wipe"}, headers=auth
    )
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (422, "action")
    closed = await client.post(
        f"{V1}/sessions/{session_id}/close", json={"outcome": "all good", "fixed": False}, headers=auth
    )
    assert closed.json()["state"] == "closed"
    again = await client.post(
        f"{V1}/sessions/{session_id}/commands", json={"action": "selftest"}, headers=auth
    )
    assert again.status_code == 409
    assert "closed: open a new session" in again.json()["error"]["message"]
    report = await client.get(
        f"{V1}/sessions/{session_id}/report", params={"format": "markdown"}, headers=auth
    )
    assert report.headers["content-type"].startswith("text/markdown")
    assert "`selftest`" in report.text
    assert "all good (not fixed)" in report.text
    listed = await client.get(f"{V1}/sessions", params={"device": "api-ses", "state": "closed"}, headers=auth)
    assert [s["id"] for s in listed.json()["items"]] == [session_id]


async def test_the_stream_is_woken_by_new_replies_not_by_polling(app: Any) -> None:
    _client, runtime, _auth = app
    client, auth = _client, _auth
    _, command_id = await open_and_run(client, auth, "selftest")
    seen: list[str] = []

    async def follow() -> None:
        async for item in runtime.commands.stream(command_id, keepalive=60):
            seen.append(item.event)

    task = asyncio.create_task(follow())
    await write(runtime, f.reply("api-ses", 50, command_id, "accepted"))
    async with asyncio.timeout(5):
        while seen != ["accepted"]:
            await asyncio.sleep(0.01)
    await write(runtime, f.reply("api-ses", 51, command_id, "result", ok=True))
    async with asyncio.timeout(5):
        await task  # woken by notify well before the 60 s keepalive
    assert seen == ["accepted", "result", "end"]
