"""Incidents end to end: the real agent runtime with a small test plugin raises and clears
faults through a real Mosquitto (mutual TLS) into the real server (ingest, sweeper, API).
Debounce, grace and flap window are shortened so each test runs in seconds."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import AgentRuntime
from agent.plugin import ActionContext, ActionResult, ActionSpec
from certs import PkiDir
from protocol import Severity
from server.db.models import Role
from tests.agent.support import device_settings
from tests.support.broker import MosquittoBroker, unique_device
from tests.support.equipment import FakePlugin
from tests.support.server import V1, bearer, connected_server, create_token, server_settings
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

INCIDENTS = {"fault_debounce": 0.5, "offline_grace": 1.0, "offline_flap_window": 1.0, "sweep_interval": 0.1}


class Printer(FakePlugin):
    """Test equipment whose ``e2e.fix`` action clears the fault it names (as a remote fix would)."""

    def __init__(self) -> None:
        super().__init__("e2e", actions=())
        self.extra_actions.append(ActionSpec("e2e.fix", self._fix, "Clear a fault."))

    async def _fix(self, args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        self.emit("fault.cleared", code=str(args.get("code", "E42")))
        return ActionResult(ok=True, output="fixed")


@contextlib.asynccontextmanager
async def fleet(
    db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    settings = server_settings(
        db_url, pki=pki, broker=broker, command_sweep_interval=0.1, incidents=INCIDENTS
    )
    async with connected_server(settings) as (client, runtime):
        yield client, bearer(await create_token(runtime, f"tech-{uuid.uuid4().hex[:6]}", Role.TECHNICIAN))


def agent_for(tmp_path: Path, pki: PkiDir, broker: MosquittoBroker, device_id: str) -> Any:
    return device_settings(
        tmp_path, pki, broker, device_id, telemetry_interval=0.2, policy={"allowed_actions": ["e2e.fix"]}
    )


async def incidents(
    client: httpx.AsyncClient, auth: dict[str, str], device_id: str, **query: str
) -> list[dict[str, Any]]:
    response = await client.get(f"{V1}/incidents", params={"device": device_id, **query}, headers=auth)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_a_fault_opens_an_incident_that_resolves_auto_and_a_blip_stays_transient(
    tmp_path: Path, db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "inc")
    plugin = Printer()
    async with fleet(db_url, pki, broker) as (client, auth):
        async with AgentRuntime(agent_for(tmp_path, pki, broker, device_id), plugins=[plugin]) as agent:
            await agent.wait_connected()
            await plugin.running.wait()
            plugin.emit("fault.raised", code="BLIP", severity=Severity.ERROR, data={"effect": "down"})
            plugin.emit("fault.cleared", code="BLIP")

            async def transient() -> list[Any]:
                response = await client.get(f"{V1}/devices/{device_id}/transient-faults", headers=auth)
                return response.json() if response.status_code == 200 else []

            assert [t["code"] for t in await eventually(transient, what="transient fault")] == ["BLIP"]

            plugin.emit(
                "fault.raised",
                code="E42",
                severity=Severity.ERROR,
                detail="paper jam",
                data={"effect": "down"},
            )
            opened = await eventually(lambda: incidents(client, auth, device_id), what="incident opened")
            assert (opened[0]["status"], opened[0]["codes"], opened[0]["symptom"]) == (
                "open",
                ["E42"],
                "paper jam",
            )
            plugin.emit("fault.cleared", code="E42")
            resolved = await eventually(
                lambda: incidents(client, auth, device_id, status="resolved"), what="incident resolved"
            )
        (incident,) = resolved
        assert (incident["channel"], incident["resolved_by"], incident["kind"]) == ("auto", "server", "fault")
        assert ts(incident["t_fault"]) <= ts(incident["t_detect"]) <= ts(incident["t_resolved"])
        assert ts(incident["t_fault"]) <= ts(incident["t_restored"])
        states = (await client.get(f"{V1}/devices/{device_id}/states", headers=auth)).json()
        assert [s["state"] for s in states][-3:] == ["running", "down", "running"]


async def test_a_technicians_command_that_fixes_it_resolves_remote(
    tmp_path: Path, db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "inc")
    plugin = Printer()
    async with fleet(db_url, pki, broker) as (client, auth):
        async with AgentRuntime(agent_for(tmp_path, pki, broker, device_id), plugins=[plugin]) as agent:
            await agent.wait_connected()
            await plugin.running.wait()
            plugin.emit("fault.raised", code="E42", severity=Severity.CRITICAL, data={"effect": "down"})
            (opened,) = await eventually(lambda: incidents(client, auth, device_id), what="incident opened")
            assert opened["priority"] == 2  # critical, no customer: criticality 3
            command = await client.post(
                f"{V1}/devices/{device_id}/commands",
                json={"action": "e2e.fix", "args": {"code": "E42"}, "wait": True, "timeout_s": 30},
                headers=auth,
            )
            assert command.json()["state"] == "succeeded", command.text
            resolved = await eventually(
                lambda: incidents(client, auth, device_id, status="resolved"), what="incident resolved"
            )
        (incident,) = resolved
        assert (incident["channel"], incident["remote_used"]) == ("remote", True)
        assert incident["t_respond"] is not None
        detail = (await client.get(f"{V1}/incidents/{incident['id']}", headers=auth)).json()
        kinds = [entry["kind"] for entry in detail["timeline"]]
        assert kinds[0] == "opened"
        assert {"command", "restored", "resolved"} <= set(kinds)
        assert detail["timeline"][-1]["detail"]["evidence"] == [command.json()["id"]]


async def test_an_agent_away_past_the_grace_opens_an_offline_incident(
    tmp_path: Path, db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "inc")
    settings = agent_for(tmp_path, pki, broker, device_id)
    async with fleet(db_url, pki, broker) as (client, auth):
        async with AgentRuntime(settings, plugins=[Printer()]) as agent:
            await agent.wait_connected()
            await agent.drained()
        # stopped (it said goodbye): after the grace, an offline incident and unknown time
        (opened,) = await eventually(
            lambda: incidents(client, auth, device_id, kind="offline"), what="offline incident"
        )
        assert opened["status"] == "open"
        async with AgentRuntime(settings, plugins=[Printer()]) as agent:  # restarted: agent.started
            await agent.wait_connected()
            resolved = await eventually(
                lambda: incidents(client, auth, device_id, kind="offline", status="resolved"),
                what="offline incident resolved after the flap window",
            )
        (incident,) = resolved
        assert (incident["channel"], incident["external"]) == ("auto", False)
        states = [
            s["state"] for s in (await client.get(f"{V1}/devices/{device_id}/states", headers=auth)).json()
        ]
        assert "unknown" in states
