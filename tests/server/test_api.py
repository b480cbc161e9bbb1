"""The HTTP API in-process (httpx ASGITransport, lifespan running), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update

from server.base import users
from server.db.models import ApiToken, Role
from server.db.types import utcnow
from server.ingest import BatchWriter
from server.runtime import Runtime
from tests.server import factory as f
from tests.support.server import api_client, create_token, server_settings

V1 = "/api/v1"


@pytest.fixture
def signing_key(tmp_path: Path) -> Path:
    path = tmp_path / "signing.key"
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    return path


@pytest.fixture
async def api(db_url: str, signing_key: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    async with api_client(server_settings(db_url, signing_key_file=signing_key)) as pair:
        yield pair


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def seed(runtime: Runtime) -> None:
    await BatchWriter(runtime.sessions).write(
        [
            f.decoded(f.status("api-1", 1, online=True)),
            f.decoded(f.inventory("api-1", 2, model="LX-9", site="north")),
            f.decoded(f.telemetry("api-1", 3, 42.5)),
            f.decoded(f.telemetry("api-1", 4, 7.0, metric="printer.toner.black.percent")),
            f.decoded(f.event("api-1", 5, "fault.raised", code="E1", severity="error")),
            f.decoded(f.inventory("api-2", 1, model="MX-1", site="south")),
        ]
    )


async def test_health_is_open_and_reports_db_and_mqtt(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, _ = api
    response = await client.get(f"{V1}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "db": True, "mqtt": False}  # MQTT disabled here


@pytest.mark.parametrize(
    "path", ["/devices", "/devices/x", "/devices/x/telemetry", "/commands/abc", "/audit", "/ingest/stats"]
)
async def test_everything_else_needs_a_token(api: tuple[httpx.AsyncClient, Runtime], path: str) -> None:
    client, _ = api
    response = await client.get(V1 + path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"
    bad = await client.get(V1 + path, headers=bearer("not-a-token"))
    assert bad.status_code == 401


async def test_expired_and_revoked_tokens_are_refused(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, runtime = api
    token = await create_token(runtime, "olga", Role.OPS)
    assert (await client.get(f"{V1}/devices", headers=bearer(token))).status_code == 200
    async with runtime.sessions() as session:
        await session.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        await session.commit()
    expired = await client.get(f"{V1}/devices", headers=bearer(token))
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]
    async with runtime.sessions() as session:
        fresh = await users.issue_token(session, "olga", actor="test", ttl=timedelta(hours=1))
        assert (await client.get(f"{V1}/devices", headers=bearer(fresh.token))).status_code == 200
        await users.revoke_token(session, fresh.token, actor="test")
    revoked = await client.get(f"{V1}/devices", headers=bearer(fresh.token))
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["error"]["message"]


async def test_roles_are_enforced(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, runtime = api
    await seed(runtime)
    ops = bearer(await create_token(runtime, "ops1", Role.OPS))
    tech = bearer(await create_token(runtime, "tech1", Role.TECHNICIAN))
    admin = bearer(await create_token(runtime, "admin1", Role.ADMIN))
    body = {"action": "diag.ping"}
    forbidden = await client.post(f"{V1}/devices/api-1/commands", json=body, headers=ops)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    assert (await client.get(f"{V1}/audit", headers=tech)).status_code == 403
    assert (await client.get(f"{V1}/ingest/stats", headers=tech)).status_code == 403
    assert (await client.get(f"{V1}/audit", headers=ops)).status_code == 200
    assert (await client.get(f"{V1}/ingest/stats", headers=admin)).status_code == 200
    created = await client.post(f"{V1}/devices/api-1/commands", json=body, headers=tech)
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "queued"  # no broker in this test: honest


async def test_device_list_filters_and_pages(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, runtime = api
    await seed(runtime)
    auth = bearer(await create_token(runtime, "viewer", Role.OPS))
    everything = (await client.get(f"{V1}/devices", headers=auth)).json()
    assert everything["total"] == 2
    assert [d["id"] for d in everything["items"]] == ["api-1", "api-2"]
    assert (await client.get(f"{V1}/devices?online=true", headers=auth)).json()["total"] == 1
    assert [
        d["id"] for d in (await client.get(f"{V1}/devices?site=south", headers=auth)).json()["items"]
    ] == ["api-2"]
    assert (await client.get(f"{V1}/devices?q=LX", headers=auth)).json()["total"] == 1
    page = (await client.get(f"{V1}/devices?limit=1&offset=1", headers=auth)).json()
    assert (page["total"], len(page["items"]), page["items"][0]["id"]) == (2, 1, "api-2")
    detail = (await client.get(f"{V1}/devices/api-1", headers=auth)).json()
    assert detail["model"] == "LX-9"
    assert detail["inventory"]["equipment"]["serial"] == "SN-api-1"
    missing = await client.get(f"{V1}/devices/nope", headers=auth)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_telemetry_and_events(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, runtime = api
    await seed(runtime)
    auth = bearer(await create_token(runtime, "viewer", Role.TECHNICIAN))
    samples = (await client.get(f"{V1}/devices/api-1/telemetry", headers=auth)).json()
    assert len(samples) == 2
    cpu = (await client.get(f"{V1}/devices/api-1/telemetry?metric=system.cpu.percent", headers=auth)).json()
    assert [s["value"] for s in cpu] == [42.5]
    later = (
        await client.get(
            f"{V1}/devices/api-1/telemetry", params={"since": "2030-01-01T00:00:00Z"}, headers=auth
        )
    ).json()
    assert later == []
    events = (await client.get(f"{V1}/devices/api-1/events", headers=auth)).json()
    assert events["total"] == 1
    assert events["items"][0]["code"] == "E1"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("get", "/devices?limit=0", None, "limit"),
        ("get", "/devices?online=maybe", None, "online"),
        ("get", "/devices/api-1/telemetry?since=yesterday", None, "since"),
        ("post", "/devices/api-1/commands", {"args": {}}, "action"),
        ("post", "/devices/api-1/commands", {"action": "diag.ping", "timeout_s": -1}, "timeout_s"),
        ("post", "/devices/api-1/commands", {"action": "Not An Action"}, "action"),
        ("post", "/devices/api-1/commands", {"action": "diag.ping", "colour": "red"}, "colour"),
        ("get", "/devices/bad%20id", None, "device_id"),
    ],
)
async def test_validation_errors_name_the_field(
    api: tuple[httpx.AsyncClient, Runtime], method: str, path: str, body: dict[str, object] | None, field: str
) -> None:
    client, runtime = api
    auth = bearer(await create_token(runtime, "admin", Role.ADMIN))
    response = await client.request(method, V1 + path, json=body, headers=auth)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == field
    assert error["message"].startswith(f"{field}: ")


async def test_unknown_route_uses_the_error_shape(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, _ = api
    response = await client.get(f"{V1}/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_openapi_is_served(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, _ = api
    spec = (await client.get("/openapi.json")).json()
    assert f"{V1}/devices/{{device_id}}/commands" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_running_server_helper_serves_real_http(db_url: str) -> None:
    from tests.support.server import running_server  # noqa: PLC0415

    async with running_server(server_settings(db_url)) as (_app, base_url), httpx.AsyncClient() as client:
        response = await client.get(f"{base_url}{V1}/health")
    assert response.json()["db"] is True


async def test_audit_window_takes_dates_and_names_a_bad_one(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    """A date is midnight UTC, a time without a zone is UTC; anything else is a 422 naming
    the parameter (not a server error)."""
    client, runtime = api
    await seed(runtime)
    ops = bearer(await create_token(runtime, "ops1", Role.OPS))
    everything = (await client.get(f"{V1}/audit", headers=ops)).json()["total"]
    assert everything > 0
    for since in ("2000-01-01", "2000-01-01T00:00:00", "2000-01-01T01:00:00+01:00"):
        page = await client.get(f"{V1}/audit", params={"since": since}, headers=ops)
        assert page.status_code == 200, page.text
        assert page.json()["total"] == everything
    future = await client.get(f"{V1}/audit", params={"since": "2999-01-01"}, headers=ops)
    assert future.json()["total"] == 0
    bad = await client.get(f"{V1}/audit", params={"until": "yesterday"}, headers=ops)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "until"
