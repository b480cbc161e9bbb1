"""The fault catalogue: plugins describe their faults (agent/plugin.py), the agent sends them in
the inventory, the server takes a fault's default effect from it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import AgentRuntime
from agent.plugin import FaultSpec, fault_catalogue
from protocol import Inventory, Severity, decode_uplink
from server.incidents.history import catalogue_of, fault_effect
from tests.agent.support import make_settings
from tests.support.equipment import FakePlugin

JAM = FaultSpec("PAPER_JAM", "Paper jam: printing stopped", Severity.ERROR, "down")
SENSOR = FaultSpec("TONER_SENSOR", "Toner sensor unreliable", Severity.WARNING, "degraded")


class CataloguedPlugin(FakePlugin):
    def fault_catalogue(self) -> Sequence[FaultSpec]:
        return [JAM, SENSOR]


def test_fault_specs_are_checked() -> None:
    assert JAM.to_json() == {
        "code": "PAPER_JAM",
        "meaning": "Paper jam: printing stopped",
        "severity": "error",
        "effect": "down",
    }
    with pytest.raises(ValueError, match="effect"):
        FaultSpec("X", effect="broken")
    with pytest.raises(ValueError, match="1-256"):
        FaultSpec("")
    assert FaultSpec("X", severity="critical").severity is Severity.CRITICAL  # type: ignore[arg-type]


def test_a_plugin_without_a_catalogue_has_an_empty_one() -> None:
    assert fault_catalogue(FakePlugin()) == []
    assert fault_catalogue(CataloguedPlugin()) == [JAM, SENSOR]

    class Repeats(FakePlugin):
        def fault_catalogue(self) -> list[FaultSpec]:
            return [JAM, JAM]

    with pytest.raises(ValueError, match="repeats PAPER_JAM"):
        fault_catalogue(Repeats())


async def test_the_agent_sends_the_catalogue_in_the_inventory(tmp_path: Path) -> None:
    key = tmp_path / "server.pub"
    key.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    plugin = CataloguedPlugin()
    settings = make_settings(tmp_path, server_key_file=key)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        await plugin.running.wait()
        messages = [decode_uplink(e.topic, e.payload) for e in runtime.outbox.pending(100)]
    (inventory,) = [m for m in messages if isinstance(m, Inventory)]
    assert inventory.config["faults"] == [JAM.to_json(), SENSOR.to_json()]
    catalogue = catalogue_of(inventory.model_dump(mode="json"))
    assert catalogue == {"PAPER_JAM": "down", "TONER_SENSOR": "degraded"}
    # the event's own data wins, then the catalogue, then the severity
    assert fault_effect({}, "TONER_SENSOR", "error", catalogue) == "degraded"
    assert fault_effect({"effect": "down"}, "TONER_SENSOR", "warning", catalogue) == "down"
    assert fault_effect({"effect": "none"}, "PAPER_JAM", "error", catalogue) is None
    assert fault_effect({}, "OTHER", "critical", catalogue) == "down"
    assert fault_effect({}, "OTHER", "warning", catalogue) is None
