"""Remote sessions end to end: a technician works a simulated printer through the real server,
a real Mosquitto (mutual TLS) and the real agent runtime — consent given on the device side,
results streamed back, the incident resolved by what the session did."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import AgentRuntime
from agent.plugin import ActionContext, ActionResult, ActionSpec
from certs import PkiDir
from server.db.models import Role
from simulators.printer import PrinterPlugin
from tests.agent.support import device_settings
from tests.support.broker import MosquittoBroker, unique_device
from tests.support.equipment import FakePlugin
from tests.support.server import V1, bearer, connected_server, create_token, server_settings
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

INCIDENTS = {"fault_debounce": 0.3, "offline_grace": 5.0, "offline_flap_window": 1.0, "sweep_interval": 0.1}


@dataclass
class Desk:
    """The technician's side: an API client with a technician's token."""

    client: httpx.AsyncClient
    auth: dict[str, str]

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(f"{V1}{path}", params=params, headers=self.auth)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    async def post(
        self, path: str, body: Mapping[str, Any], *, expect: int | tuple[int, ...] = (200, 201)
    ) -> Any:
        response = await self.client.post(f"{V1}{path}", json=dict(body), headers=self.auth)
        expected = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in expected, f"POST {path}: {response.status_code} {response.text}"
        return response.json()

    async def run(self, session_id: str, action: str, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.post(
            f"/sessions/{session_id}/commands", {"action": action, "wait_s": 30, **body}
        )
        return result

    async def session(self, session_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.get(f"/sessions/{session_id}")
        return body

    async def device_commands(self, device_id: str) -> list[dict[str, Any]]:
        return list((await self.get(f"/devices/{device_id}/commands", limit=1000))["items"])

    async def catalogue(self, device_id: str) -> list[str]:
        device = await self.get(f"/devices/{device_id}")
        inventory = device.get("inventory") or {}
        return [entry["name"] for entry in inventory.get("agent", {}).get("catalogue", [])]


@contextlib.asynccontextmanager
async def desk(db_url: str, pki: PkiDir, broker: MosquittoBroker) -> AsyncIterator[Desk]:
    settings = server_settings(
        db_url, pki=pki, broker=broker, command_sweep_interval=0.1, incidents=INCIDENTS
    )
    async with connected_server(settings) as (client, runtime):
        token = await create_token(runtime, f"tech-{uuid.uuid4().hex[:6]}", Role.TECHNICIAN)
        yield Desk(client, bearer(token))


async def ready(desk: Desk, agent: AgentRuntime, device_id: str, action: str) -> None:
    """The agent is connected and the server knows its action catalogue (its inventory arrived)."""
    await agent.wait_connected()
    await eventually(lambda: _has(desk, device_id, action), what=f"{action} in the catalogue")


async def _has(desk: Desk, device_id: str, action: str) -> bool:
    response = await desk.client.get(f"{V1}/devices/{device_id}", headers=desk.auth)
    return response.status_code == 200 and action in await desk.catalogue(device_id)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_a_technician_clears_a_paper_jam_remotely_and_the_incident_resolves_remote(
    tmp_path: Path, db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "jam")
    printer = PrinterPlugin(device_id, {"jam_rate_per_hour": 0, "seed": 1})
    settings = device_settings(
        tmp_path,
        pki,
        broker,
        device_id,
        telemetry_interval=0.5,
        policy={"allowed_actions": ["ping", "selftest", "printer.status", "printer.clear_jam"]},
    )
    async with desk(db_url, pki, broker) as tech, AgentRuntime(settings, plugins=[printer]) as agent:
        await ready(tech, agent, device_id, "printer.clear_jam")
        await eventually(lambda: printer.attached, what="printer running")
        assert printer.inject_fault("PAPER_JAM")

        async def open_incidents() -> list[dict[str, Any]]:
            return list((await tech.get("/incidents", device=device_id, status="open"))["items"])

        (incident,) = await eventually(open_incidents, what="incident for the jam")
        opened = await tech.post(
            "/sessions",
            {"device_id": device_id, "incident_id": incident["id"], "reason": "paper jam reported"},
        )
        assert opened["state"] == "active", opened
        session_id = opened["id"]

        diagnosis = await tech.run(session_id, "selftest")
        assert diagnosis["state"] == "failed", diagnosis  # the self-test finds the jam
        assert "jam" in (diagnosis["output"] or "").lower(), diagnosis["output"]
        fix = await tech.run(session_id, "printer.clear_jam")
        assert fix["state"] == "succeeded", fix
        assert (fix["session_id"], fix["issuer"]) == (session_id, opened["owner"])
        check = await tech.run(session_id, "selftest")
        assert check["state"] == "succeeded", check

        async def resolved() -> list[dict[str, Any]]:
            return list((await tech.get("/incidents", device=device_id, status="resolved"))["items"])

        (done,) = await eventually(resolved, what="incident resolved")
        closed = await tech.post(
            f"/sessions/{session_id}/close",
            {"outcome": "jam cleared remotely; self-test passes", "fixed": True},
        )
        assert closed["state"] == "closed"
        report = await tech.get(f"/sessions/{session_id}/report")
        markdown = await tech.client.get(
            f"{V1}/sessions/{session_id}/report", params={"format": "markdown"}, headers=tech.auth
        )

    assert (done["id"], done["channel"], done["remote_used"]) == (incident["id"], "remote", True)
    assert None not in (done["t_respond"], done["t_restored"])
    assert ts(done["t_detect"]) <= ts(done["t_respond"]) <= ts(done["t_resolved"])
    assert ts(done["t_fault"]) <= ts(done["t_restored"])

    steps = [(c["action"], c["state"]) for c in report["commands"]]
    assert steps == [("selftest", "failed"), ("printer.clear_jam", "succeeded"), ("selftest", "succeeded")]
    assert all(c["issuer"] == opened["owner"] for c in report["commands"])
    assert markdown.status_code == 200, markdown.text
    assert markdown.headers["content-type"].startswith("text/markdown")
    for needle in ("printer.clear_jam", "selftest", opened["owner"], device_id, "jam cleared remotely"):
        assert needle in markdown.text, needle


class Counting(FakePlugin):
    """Equipment whose ``e2e.touch`` counts how often it really ran, and ``e2e.sleep`` runs long."""

    def __init__(self) -> None:
        super().__init__("e2e", actions=())
        self.ran = 0
        self.extra_actions += [
            ActionSpec("e2e.touch", self._touch, "Count a run."),
            ActionSpec("e2e.sleep", self._sleep, "Run for a minute.", timeout=120.0),
        ]

    async def _touch(self, args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        self.ran += 1
        return ActionResult(ok=True, output="touched")

    async def _sleep(self, args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        await ctx.progress(0.1, "sleeping")
        await asyncio.sleep(60)
        return ActionResult(ok=True, output="woke up")


async def test_attended_mode_nothing_runs_before_approval_after_a_denial_or_once_approval_expired(
    tmp_path: Path, db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "att")
    plugin = Counting()
    settings = device_settings(
        tmp_path,
        pki,
        broker,
        device_id,
        telemetry_interval=0.5,
        policy={"allowed_actions": ["e2e.touch"], "attended": True},
    )
    async with desk(db_url, pki, broker) as tech, AgentRuntime(settings, plugins=[plugin]) as agent:
        await ready(tech, agent, device_id, "e2e.touch")

        # 1. before approval: the server refuses to sign, the device runs nothing
        first = await tech.post("/sessions", {"device_id": device_id, "reason": "attended check"})
        assert (first["state"], first["requires_consent"]) == ("awaiting_consent", True), first
        refused = await tech.post(f"/sessions/{first['id']}/commands", {"action": "e2e.touch"}, expect=409)
        assert "consent" in str(refused).lower()
        pending = await eventually(
            lambda: [r.session_id for r in agent.consent.pending()], what="consent request"
        )
        assert pending == [first["id"]]

        # 2. approved for two seconds: commands run; once it expired, nothing starts
        agent.consent.approve(first["id"], by="nurse.on.duty", ttl=timedelta(seconds=2))
        await eventually(lambda: _state_is(tech, first["id"], "active"), what="session active after approval")
        assert (await tech.session(first["id"]))["consent_by"] == "nurse.on.duty"
        ran = await tech.run(first["id"], "e2e.touch")
        assert (ran["state"], plugin.ran) == ("succeeded", 1)
        await asyncio.sleep(2.5)
        late = await tech.client.post(
            f"{V1}/sessions/{first['id']}/commands",
            json={"action": "e2e.touch", "wait_s": 10},
            headers=tech.auth,
        )
        assert late.status_code == 409 or late.json()["state"] == "rejected", late.text
        if late.status_code != 409:
            assert late.json()["reason"] == "needs_consent"
        assert plugin.ran == 1
        await tech.post(f"/sessions/{first['id']}/close", {"outcome": "done", "fixed": False})

        # 3. denied: final for that session
        second = await tech.post("/sessions", {"device_id": device_id, "reason": "second look"})
        await eventually(
            lambda: [r.session_id for r in agent.consent.pending()], what="second consent request"
        )
        agent.consent.deny(second["id"], by="nurse.on.duty", reason="patient on the table")
        await eventually(lambda: _state_is(tech, second["id"], "denied"), what="session denied")
        await tech.post(f"/sessions/{second['id']}/commands", {"action": "e2e.touch"}, expect=409)
        with pytest.raises(Exception, match="denied"):
            agent.consent.approve(second["id"], by="someone.else")
        await asyncio.sleep(0.5)
        assert plugin.ran == 1
        actions = [c["action"] for c in await tech.device_commands(device_id)]
        assert actions.count("e2e.touch") == 2 - (1 if late.status_code == 409 else 0)


async def _state_is(desk: Desk, session_id: str, state: str) -> bool:
    return (await desk.session(session_id))["state"] == state


async def test_a_streamed_multi_megabyte_fetch_arrives_intact_and_a_cancelled_command_stops(
    tmp_path: Path, db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "fetch")
    log = tmp_path / "equipment.log"
    log.write_bytes(b"".join(f"{i:08d} fuser temperature nominal\n".encode() for i in range(100_000)))
    plugin = Counting()
    settings = device_settings(
        tmp_path,
        pki,
        broker,
        device_id,
        telemetry_interval=0.5,
        policy={
            "allowed_actions": ["file.fetch", "e2e.sleep"],
            "consent_actions": [],
            "fetch_paths": [str(log)],
        },
    )
    async with desk(db_url, pki, broker) as tech, AgentRuntime(settings, plugins=[plugin]) as agent:
        await ready(tech, agent, device_id, "file.fetch")
        opened = await tech.post("/sessions", {"device_id": device_id, "reason": "collect logs"})
        fetched = await tech.run(opened["id"], "file.fetch", args={"path": str(log)}, wait_s=60)
        assert fetched["state"] == "succeeded", fetched
        body = await tech.client.get(f"{V1}/commands/{fetched['id']}/file", headers=tech.auth)
        assert body.status_code == 200, body.text
        assert hashlib.sha256(body.content).hexdigest() == hashlib.sha256(log.read_bytes()).hexdigest()
        assert len(body.content) == log.stat().st_size > 3_000_000

        slow = await tech.post(f"/sessions/{opened['id']}/commands", {"action": "e2e.sleep"})
        await eventually(
            lambda: _command_state(tech, slow["id"], "accepted"), what="long command running on the device"
        )
        await tech.post(f"/commands/{slow['id']}/cancel", {}, expect=202)
        await eventually(lambda: _command_state(tech, slow["id"], "cancelled"), what="command cancelled")


async def _command_state(desk: Desk, command_id: str, state: str) -> bool:
    return (await desk.get(f"/commands/{command_id}"))["state"] == state
