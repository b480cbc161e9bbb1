"""Sign-in, sign-out, disabled users and the admin users API, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from server import customers
from server.base import audit, users
from server.db.models import AuditEntry, Role, User
from server.db.types import utcnow
from server.runtime import Runtime
from tests.support.server import V1, api_client, bearer, create_token, server_settings
from tests.support.waiting import eventually

PASSWORD = "correct horse battery"
LOGIN_TTL = 600.0


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    admin: dict[str, str]

    async def login(self, username: str, password: str) -> httpx.Response:
        return await self.client.post(f"{V1}/auth/login", json={"username": username, "password": password})

    async def audit_rows(self, action: str) -> list[AuditEntry]:
        async with self.runtime.sessions() as session:
            rows = await session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            )
            return list(rows)


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    settings = server_settings(db_url, incidents={"enabled": False}, auth={"login_token_ttl": LOGIN_TTL})
    async with api_client(settings) as (client, runtime):
        yield Api(client, runtime, bearer(await create_token(runtime, "root", Role.ADMIN)))


async def test_sign_in_me_and_sign_out(api: Api) -> None:
    created = await api.client.post(
        f"{V1}/users", headers=api.admin, json={"name": "tina", "role": "technician", "password": PASSWORD}
    )
    assert created.status_code == 201, created.text
    assert created.json()["has_password"] is True

    before = utcnow()
    signed_in = await api.login("tina", PASSWORD)
    assert signed_in.status_code == 200, signed_in.text
    body = signed_in.json()
    assert (body["role"], body["user"]["name"]) == ("technician", "tina")
    expires = body["expires_at"]
    lifetime = datetime.fromisoformat(expires) - before
    assert timedelta(seconds=LOGIN_TTL - 5) <= lifetime <= timedelta(seconds=LOGIN_TTL + 5)

    token = bearer(body["token"])
    me = await api.client.get(f"{V1}/auth/me", headers=token)
    assert me.status_code == 200
    assert (me.json()["name"], me.json()["role"]) == ("tina", "technician")
    assert me.json()["token_expires_at"] == expires

    other = bearer((await api.login("tina", PASSWORD)).json()["token"])
    assert (await api.client.post(f"{V1}/auth/logout", headers=token)).status_code == 204
    gone = await api.client.get(f"{V1}/auth/me", headers=token)
    assert gone.status_code == 401
    assert "revoked" in gone.json()["error"]["message"]
    assert (await api.client.get(f"{V1}/auth/me", headers=other)).status_code == 200  # only that token

    logins = await api.audit_rows("auth.login")
    assert [(row.actor, row.result) for row in logins] == [("user:tina", "ok"), ("user:tina", "ok")]


async def test_unknown_user_and_wrong_password_get_the_same_answer(api: Api) -> None:
    async with api.runtime.sessions() as session:
        await users.create_user(session, "pat", Role.OPS, actor="test", password=PASSWORD)
        await users.create_user(session, "tokenonly", Role.OPS, actor="test")
    wrong = await api.login("pat", "not the password")
    unknown = await api.login("nobody", PASSWORD)
    no_password = await api.login("tokenonly", PASSWORD)
    assert wrong.status_code == unknown.status_code == no_password.status_code == 401
    assert wrong.json() == unknown.json() == no_password.json()
    assert wrong.headers["www-authenticate"] == "Bearer"
    denied = await api.audit_rows("auth.login")
    assert [(row.actor, row.target, row.result) for row in denied] == [
        ("anonymous", "user:pat", "denied"),
        ("anonymous", "user:nobody", "denied"),
        ("anonymous", "user:tokenonly", "denied"),
    ]


async def test_a_disabled_user_cannot_sign_in_and_its_tokens_stop_working(api: Api) -> None:
    async with api.runtime.sessions() as session:
        await users.create_user(session, "dora", Role.TECHNICIAN, actor="test", password=PASSWORD)
        api_token = bearer((await users.issue_token(session, "dora", actor="test")).token)
    signed_in = bearer((await api.login("dora", PASSWORD)).json()["token"])

    disabled = await api.client.post(f"{V1}/users/dora/disable", headers=api.admin)
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled_at"] is not None
    for token in (api_token, signed_in):
        assert (await api.client.get(f"{V1}/devices", headers=token)).status_code == 401
    refused = await api.login("dora", PASSWORD)
    assert refused.status_code == 401
    assert "disabled" in refused.json()["error"]["message"]
    again = await api.client.post(f"{V1}/users/dora/disable", headers=api.admin)
    assert again.status_code == 409
    [row] = await api.audit_rows("user.disabled")
    assert (row.actor, row.target, len(row.detail["token_ids"])) == ("user:root", "user:dora", 2)


async def test_users_api_creates_assigns_and_sets_passwords_with_field_errors(api: Api) -> None:
    async with api.runtime.sessions() as session:
        acme = await customers.create_customer(session, name="acme", actor="test")
    post = api.client.post
    no_customer = await post(f"{V1}/users", headers=api.admin, json={"name": "carl", "role": "customer"})
    assert no_customer.status_code == 422
    assert no_customer.json()["error"]["field"] == "customer"
    short = await post(
        f"{V1}/users", headers=api.admin, json={"name": "x", "role": "ops", "password": "short"}
    )
    assert short.status_code == 422
    assert short.json()["error"]["field"] == "password"
    carl = await post(
        f"{V1}/users", headers=api.admin, json={"name": "carl", "role": "customer", "customer": "acme"}
    )
    assert carl.status_code == 201, carl.text
    assert carl.json()["customer_id"] == acme.id

    await post(f"{V1}/users", headers=api.admin, json={"name": "tina", "role": "technician"})
    assigned = await post(f"{V1}/users/tina/assignments/{acme.id}", headers=api.admin)
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["assignments"] == [acme.id]
    not_tech = await post(f"{V1}/users/carl/assignments/{acme.id}", headers=api.admin)
    assert not_tech.status_code == 422
    removed = await api.client.delete(f"{V1}/users/tina/assignments/{acme.id}", headers=api.admin)
    assert removed.json()["assignments"] == []
    assert (
        await api.client.delete(f"{V1}/users/tina/assignments/{acme.id}", headers=api.admin)
    ).status_code == 404

    put = await api.client.put(f"{V1}/users/tina/password", headers=api.admin, json={"password": PASSWORD})
    assert put.status_code == 204
    assert (await api.login("tina", PASSWORD)).status_code == 200

    listed = await api.client.get(f"{V1}/users", params={"role": "technician"}, headers=api.admin)
    assert [u["name"] for u in listed.json()["items"]] == ["tina"]
    for action in ("user.created", "user.assigned", "user.unassigned", "user.password_set"):
        assert [row.actor for row in await api.audit_rows(action)][-1] == "user:root", action


async def test_a_hash_with_old_parameters_is_upgraded_at_sign_in(api: Api) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    async with api.runtime.sessions() as session:
        user = await users.create_user(session, "old", Role.OPS, actor="test")
        user.password_hash = weak.hash(PASSWORD)
        await session.commit()
    assert (await api.login("old", PASSWORD)).status_code == 200
    async with api.runtime.sessions() as session:
        stored = await session.scalar(select(User.password_hash).where(User.name == "old"))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert not PasswordHasher().check_needs_rehash(stored)
    assert (await api.login("old", PASSWORD)).status_code == 200


async def test_sign_in_and_user_changes_join_the_audit_chain(api: Api) -> None:
    async with api.runtime.sessions() as session:
        await users.create_user(session, "vera", Role.OPS, actor="test", password=PASSWORD)
    await api.login("vera", PASSWORD)
    answer = await api.client.get(f"{V1}/audit/verify", headers=api.admin)
    assert answer.status_code == 200
    body = answer.json()
    assert body["ok"] is True
    async with api.runtime.sessions() as session:
        total = len(list(await session.scalars(select(AuditEntry.id))))
        assert (await audit.verify(session)).head_seq == total
    assert body["entries"] == total


async def test_the_server_seals_new_entries_by_itself(db_url: str) -> None:
    settings = server_settings(db_url, incidents={"enabled": False}, auth={"audit_seal_interval": 0.05})
    async with api_client(settings) as (_client, runtime):
        await create_token(runtime, "sam", Role.OPS)

        async def all_sealed() -> bool:
            async with runtime.sessions() as session:
                pending = await session.scalar(select(AuditEntry.id).where(AuditEntry.chain_seq.is_(None)))
                sealed = await session.scalar(select(AuditEntry.id).where(AuditEntry.chain_seq.is_not(None)))
                return pending is None and sealed is not None

        assert await eventually(all_sealed, timeout=5)
