"""Limits at the API edge (issue 13): hostile file names in Content-Disposition (attack 4: a device
names the file it fetched) and oversized command arguments over HTTP (attack 3)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from server.api.download import MAX_FILENAME_CHARS, content_disposition
from server.db.models import Device, Role
from server.db.types import utcnow
from tests.server import factory as f
from tests.server.test_sessions_api import app, open_and_run, write  # noqa: F401 - the fixture
from tests.support.server import V1, api_client, bearer, create_token, server_settings

HOSTILE = [
    'a"b.log',
    "x.log\"; filename*=UTF-8''evil.exe",
    "line\r\nSet-Cookie: a=b",
    "Bericht-März-Ωmega.log",
    "..\\..\\windows\\system32\\cfg.ini",
    "/var/log/",
    "",
    "\x00\x01\x7f",
    "tab\there;semi%percent.txt",
    "x" * 5000 + ".log",
    "\ud800lone.log",
]


def parsed(value: str) -> tuple[str, str | None, dict[str, str]]:
    """Split the header strictly by RFC 6266's grammar: (disposition, decoded filename*, params).
    Anything left over (an injected parameter, a stray quote) fails the full match."""
    grammar = re.fullmatch(
        r'(attachment|inline); filename="([^"\\]*)"(?:; filename\*=UTF-8\'\'([A-Za-z0-9%!#$&+.^_`|~-]+))?',
        value,
    )
    assert grammar, value
    star = unquote(grammar.group(3), errors="strict") if grammar.group(3) else None
    return grammar.group(1), star, {"filename": grammar.group(2)}


@pytest.mark.parametrize("name", HOSTILE)
def test_every_hostile_name_gives_one_well_formed_header(name: str) -> None:
    value = content_disposition(name)
    assert all(" " <= ch <= "~" for ch in value), value  # latin-1 safe, no CR/LF, no controls
    assert value.count("filename=") == 1
    assert value.count("filename*=") <= 1
    disposition, star, params = parsed(value)
    assert disposition == "attachment"
    fallback = params["filename"]
    assert fallback
    assert not set(fallback) & set('"\\/;%')
    assert len(fallback) <= MAX_FILENAME_CHARS
    shown = star if star is not None else fallback
    assert "/" not in shown
    assert "\\" not in shown
    assert "\r" not in shown
    assert "\n" not in shown
    assert len(shown) <= MAX_FILENAME_CHARS


def test_plain_names_stay_plain_and_unicode_survives_in_filename_star() -> None:
    assert content_disposition("app.log") == 'attachment; filename="app.log"'
    assert content_disposition("/var/log/app.log", disposition="inline") == 'inline; filename="app.log"'
    _, star, params = parsed(content_disposition("Bericht-März.log"))
    assert star == "Bericht-März.log"
    assert params["filename"] == "Bericht-Marz.log"
    long = content_disposition("y" * 300 + ".tar.gz")
    assert parsed(long)[2]["filename"].endswith(".gz")


@pytest.mark.parametrize("path", ['/tmp/a"b;c.log', "/tmp/r\u00e9sum\u00e9\r\n.log", "/tmp/\u65e5\u672c.txt"])
async def test_a_device_supplied_path_downloads_with_a_safe_header(app: Any, path: str) -> None:  # noqa: F811
    client, runtime, auth = app
    content = b"log line\n" * 10
    _, command_id = await open_and_run(client, auth, "file.fetch", path="/var/log/app.log")
    data = {"path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
            "encoding": "base64", "chunks": 1}  # fmt: skip
    await write(runtime, f.reply("api-ses", 10, command_id, "accepted"),
                f.reply("api-ses", 11, command_id, "output", output=base64.b64encode(content).decode(), chunk=0),
                f.reply("api-ses", 12, command_id, "result", ok=True, data=data))  # fmt: skip
    fetched = await client.get(f"/api/v1/commands/{command_id}/file", headers=auth)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == content
    _, star, params = parsed(fetched.headers["content-disposition"])
    assert '"' not in params["filename"]
    assert ";" not in params["filename"]
    expected = path.rsplit("/", 1)[-1].replace("\r", " ").replace("\n", " ").strip()
    assert (star or params["filename"]) == expected


async def test_an_oversized_command_is_refused_at_each_edge(app: Any) -> None:  # noqa: F811
    """Issue 13, attack 3, over HTTP: five megabytes stop at the body limit (413, unread);
    100 KB of args pass it and are refused before signing (422 naming args, with the limit)."""
    client, _, auth = app
    opened = await client.post("/api/v1/sessions", json={"device_id": "api-ses", "reason": "x"}, headers=auth)
    assert opened.status_code == 201, opened.text
    url = f"/api/v1/sessions/{opened.json()['id']}/commands"
    huge = await client.post(
        url, json={"action": "selftest", "args": {"blob": "x" * 5_000_000}}, headers=auth
    )
    assert_body_too_large(huge)
    sent = await client.post(url, json={"action": "selftest", "args": {"blob": "x" * 100_000}}, headers=auth)
    assert sent.status_code == 422, sent.text
    assert "args" in sent.text
    assert "limit" in sent.text


# -- integers and numbers out of range (issue 13: OverflowError and PostgreSQL int4 as 500s) -------

BIG = 2**64  # past SQLite's and psycopg's signed 64-bit integers: OverflowError
INT4 = 2**31  # past PostgreSQL INTEGER, the type of the id columns: "integer out of range"


@pytest.fixture
async def admin_api(db_url: str) -> Any:
    async with api_client(server_settings(db_url)) as (client, runtime):
        async with runtime.sessions() as session:
            session.add(Device(id="edge-1", first_seen=utcnow(), model="LX-9"))
            await session.commit()
        yield client, bearer(await create_token(runtime, "root", Role.ADMIN))


OUT_OF_RANGE: list[Any] = [
    # (method, url, request keywords, the field the 422 names)
    ("GET", f"{V1}/incidents/{BIG}", {}, "incident_id"),
    ("GET", f"{V1}/incidents/{INT4}", {}, "incident_id"),
    ("GET", f"{V1}/customers/{INT4}", {}, "customer_id"),
    ("GET", f"{V1}/knowledge/articles/{BIG}", {}, "article_id"),
    ("GET", f"{V1}/rules/{BIG}", {}, "rule_id"),
    ("GET", f"{V1}/devices", {"params": {"offset": BIG}}, "offset"),
    ("GET", f"{V1}/devices", {"params": {"offset": INT4}}, "offset"),
    ("GET", f"{V1}/incidents", {"params": {"customer": BIG}}, "customer"),
    ("GET", f"{V1}/rules/alerts", {"params": {"rule": BIG}}, "rule"),
    ("GET", f"{V1}/sessions", {"params": {"incident": BIG}}, "incident"),
    (
        "GET",
        f"{V1}/kpis",
        {"params": {"from": "2026-01-01", "to": "2026-02-01", "customer": BIG}},
        "customer",
    ),
    ("GET", f"{V1}/kpis", {"params": {"from": "2026-01-01", "to": "2026-02-01", "site": INT4}}, "site"),
    ("PATCH", f"{V1}/devices/edge-1", {"json": {"customer_id": BIG}}, "customer_id"),
    ("PATCH", f"{V1}/devices/edge-1", {"json": {"site_id": INT4}}, "site_id"),
    ("POST", f"{V1}/sessions", {"json": {"device_id": "edge-1", "incident_id": BIG}}, "incident_id"),
    ("POST", f"{V1}/users", {"json": {"name": "c1", "role": "customer", "customer": BIG}}, "customer"),
    ("GET", f"{V1}/commands/c1/stream", {"headers": {"Last-Event-ID": str(2**63)}}, "last-event-id"),
    ("GET", f"{V1}/audit", {"params": {"offset": BIG}}, "offset"),
]


@pytest.mark.parametrize(("method", "url", "kwargs", "field"), OUT_OF_RANGE)
async def test_an_out_of_range_integer_is_a_422_naming_the_field(
    admin_api: Any, method: str, url: str, kwargs: dict[str, Any], field: str
) -> None:
    client, auth = admin_api
    extra = {name: value for name, value in kwargs.items() if name != "headers"}
    headers = {**auth, **kwargs.get("headers", {})}
    response = await client.request(method, url, headers=headers, **extra)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"].split(".")[0] == field, error


# -- request body size (issue 13: every limit enforced at the edge that receives it) ---------------

MIB = 1024 * 1024


def assert_body_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "body_too_large"
    assert "api.max_body_bytes" in error["message"]


async def test_a_declared_oversized_body_is_refused_before_authentication(admin_api: Any) -> None:
    client, _ = admin_api
    body = json.dumps({"name": "x" * (2 * MIB)})
    response = await client.post(
        f"{V1}/customers", content=body, headers={"Content-Type": "application/json"}
    )
    assert_body_too_large(response)  # not 401: the app never ran


async def test_a_chunked_oversized_body_is_counted_and_refused(admin_api: Any) -> None:
    client, auth = admin_api

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 64 * 1024  # 2.5 MiB in all, no Content-Length
        yield b'"}'

    response = await client.post(
        f"{V1}/customers", content=chunks(), headers={**auth, "Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_body_too_large(response)


async def test_a_body_under_the_limit_is_served(admin_api: Any) -> None:
    client, auth = admin_api
    big_but_allowed = {"name": "acme", "padding": "x" * (MIB // 2)}
    response = await client.post(f"{V1}/customers", json=big_but_allowed, headers=auth)
    assert response.status_code == 422, response.text  # read and validated: extra field
    assert response.json()["error"]["field"] == "padding"
    created = await client.post(f"{V1}/customers", json={"name": "acme"}, headers=auth)
    assert created.status_code == 201, created.text


async def test_the_limit_is_a_setting(db_url: str) -> None:
    async with api_client(server_settings(db_url, api={"max_body_bytes": 64 * 1024})) as (client, runtime):
        auth = bearer(await create_token(runtime, "root", Role.ADMIN))
        response = await client.post(f"{V1}/customers", json={"name": "x" * 70_000}, headers=auth)
        assert_body_too_large(response)
        assert "65536 bytes" in response.json()["error"]["message"]


# -- NUL characters (issue 13: PostgreSQL text cannot hold them — DataError, a 500) ----------------

NUL_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", f"{V1}/customers", {"json": {"name": "a\x00b"}}, "name"),
    ("POST", f"{V1}/knowledge/articles", {"json": {"title": "t", "symptom": "s\x00"}}, "symptom"),
    ("POST", f"{V1}/sessions", {"json": {"device_id": "edge-1", "reason": "x\x00"}}, "reason"),
    ("GET", f"{V1}/devices", {"params": {"q": "a\x00b"}}, "q"),
    ("GET", f"{V1}/devices", {"params": {"model": "\x00"}}, "model"),
    ("GET", f"{V1}/users/a%00b", {}, "name"),
    ("GET", f"{V1}/sessions/ses_%00", {}, "session_id"),
]


@pytest.mark.parametrize(("method", "url", "kwargs", "field"), NUL_CASES)
async def test_a_nul_character_is_a_422_naming_the_field(
    admin_api: Any, method: str, url: str, kwargs: dict[str, Any], field: str
) -> None:
    client, auth = admin_api
    response = await client.request(method, url, headers=auth, **kwargs)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == field, error
    assert "NUL" in error["message"]


async def test_a_nul_inside_free_json_is_refused_and_an_escaped_backslash_is_not(admin_api: Any) -> None:
    """Keys and values at any depth (a command's args, an article's actions) are checked; the
    text ``\\u0000`` (an escaped backslash before ``u0000``) is only text."""
    client, auth = admin_api
    nested = {"title": "t", "symptom": "s", "actions": [{"action": "x", "args": {"k\x00": 1}}]}
    response = await client.post(f"{V1}/knowledge/articles", json=nested, headers=auth)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "actions.0.args"
    literal = await client.post(f"{V1}/customers", json={"name": "back\\u0000slash"}, headers=auth)
    assert literal.status_code == 201, literal.text
    assert literal.json()["name"] == "back\\u0000slash"


async def test_broken_json_with_an_escaped_nul_is_not_a_500(admin_api: Any) -> None:
    """The guard reads the body of a route that takes none; JSON it cannot parse is not its
    business (a route with a body answers json_invalid itself)."""
    client, auth = admin_api
    headers = {**auth, "Content-Type": "application/json"}
    broken = '{"x": "\\u0000'
    no_body = await client.post(f"{V1}/knowledge/articles/1/publish", content=broken, headers=headers)
    assert no_body.status_code == 404, no_body.text
    with_body = await client.post(f"{V1}/customers", content=broken, headers=headers)
    assert with_body.status_code == 422, with_body.text
