"""The built-in diagnostics beyond the basic four, run through the real executor."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.actions import ActionExecutor, device_actions
from agent.actions.files import RAW_CHUNK
from agent.actions.registry import RegisteredAction
from agent.config import PolicySettings
from agent.plugin import ActionContext, ActionResult
from protocol import ReplyType
from tests.agent.support import FakePlugin, closed_port
from tests.agent.test_streaming import NOW, Replies, command


class FakeServices:
    """A ServiceManager that remembers restarts."""

    def __init__(self) -> None:
        self.active = {"cups": True, "acme-spooler": False}
        self.restarts: list[str] = []

    async def status(self, name: str) -> dict[str, Any]:
        return {"active": self.active[name], "state": "active (running)" if self.active[name] else "failed"}

    async def restart(self, name: str) -> str:
        self.restarts.append(name)
        self.active[name] = True
        return f"{name} restarted"


class Device:
    def __init__(self, tmp_path: Path, plugins: list[Any] | None = None, **policy: Any) -> None:
        self.services = FakeServices()
        specs = device_actions(
            PolicySettings(**policy), data_dir=tmp_path, plugins=plugins or [], service_manager=self.services
        )
        self.specs = {s.name: s for s in specs}

    async def run(self, action: str, args: dict[str, Any] | None = None) -> Replies:
        replies = Replies()
        executor = ActionExecutor(device_id="dev-1", send=replies, now=lambda: NOW)
        async with asyncio.timeout(10):
            await executor.execute(
                command(action, args=args), RegisteredAction(self.specs[action], "built-in")
            )
        return replies


def result(replies: Replies) -> dict[str, Any]:
    last = replies.sent[-1]
    assert last["type"] in (ReplyType.RESULT, ReplyType.ERROR)
    return last


def test_device_actions_declare_schema_timeout_and_disruptive(tmp_path: Path) -> None:
    specs = Device(tmp_path).specs
    assert set(specs) == {
        "network.check",
        "disk.usage",
        "service.status",
        "service.restart",
        "file.fetch",
        "config.get",
        "config.set",
        "config.undo",
        "selftest",
    }
    assert {n for n, s in specs.items() if s.disruptive} == {"service.restart", "config.set", "config.undo"}
    assert all(s.args_schema and s.timeout > 0 and s.description for s in specs.values())


# -- network.check -----------------------------------------------------------------------------


@pytest.fixture
async def listening() -> AsyncIterator[int]:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port


async def test_network_check_reports_reachable_and_refused_hosts(tmp_path: Path, listening: int) -> None:
    refused = closed_port()
    device = Device(tmp_path, network_hosts=[f"127.0.0.1:{listening}", f"localhost:{refused}"])
    answer = result(await device.run("network.check"))
    assert answer["ok"] is False
    hosts = {h["port"]: h for h in answer["data"]["hosts"]}
    assert hosts[listening]["ok"]
    assert hosts[listening]["connect_ms"] >= 0
    assert hosts[listening]["addresses"] == ["127.0.0.1"]
    assert not hosts[refused]["ok"]
    assert hosts[refused]["addresses"]  # resolved, then refused
    assert "TCP" in hosts[refused]["error"]
    only = result(await device.run("network.check", {"hosts": [f"127.0.0.1:{listening}"]}))
    assert only["ok"] is True
    assert len(only["data"]["hosts"]) == 1


async def test_network_check_refuses_hosts_outside_the_policy(tmp_path: Path) -> None:
    answer = result(
        await Device(tmp_path, network_hosts=["127.0.0.1:1"]).run("network.check", {"hosts": ["10.0.0.1:22"]})
    )
    assert answer["type"] is ReplyType.ERROR
    assert "not in policy.network_hosts" in answer["output"]
    empty = result(await Device(tmp_path).run("network.check"))
    assert "policy.network_hosts is empty" in empty["output"]


# -- disk.usage --------------------------------------------------------------------------------


async def test_disk_usage_per_mount_and_for_an_allowed_path_only(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    device = Device(tmp_path, log_paths=[logs])
    mounts = result(await device.run("disk.usage"))["data"]["mounts"]
    assert mounts
    assert all(0 <= m["percent"] <= 100 and m["total"] > 0 for m in mounts)
    one = result(await device.run("disk.usage", {"path": str(logs)}))
    assert one["ok"]
    assert one["data"]["mounts"][0]["mountpoint"] == str(logs.resolve())
    outside = result(await device.run("disk.usage", {"path": str(tmp_path / "elsewhere")}))
    assert outside["type"] is ReplyType.ERROR
    assert "neither a mount point" in outside["output"]


# -- service.* ---------------------------------------------------------------------------------


async def test_service_status_and_restart_through_the_manager_for_allowed_services(tmp_path: Path) -> None:
    device = Device(tmp_path, services=["cups", "acme-spooler"])
    status = result(await device.run("service.status", {"name": "acme-spooler"}))
    assert status["ok"] is False
    assert status["data"]["state"] == "failed"
    restarted = result(await device.run("service.restart", {"name": "acme-spooler"}))
    assert restarted["ok"] is True
    assert device.services.restarts == ["acme-spooler"]
    refused = result(await device.run("service.restart", {"name": "sshd"}))
    assert refused["type"] is ReplyType.ERROR
    assert "not in policy.services" in refused["output"]
    assert device.services.restarts == ["acme-spooler"]


# -- file.fetch --------------------------------------------------------------------------------


async def test_file_fetch_streams_a_3mb_file_in_order_with_a_matching_sha256(tmp_path: Path) -> None:
    allowed = tmp_path / "dumps"
    allowed.mkdir()
    payload = os.urandom(3 * 1024 * 1024 + 123)
    (allowed / "core.bin").write_bytes(payload)
    replies = await Device(tmp_path, fetch_paths=[allowed]).run(
        "file.fetch", {"path": str(allowed / "core.bin")}
    )
    chunks = [r for r in replies.sent if r["type"] is ReplyType.OUTPUT]
    final = result(replies)
    assert [c["chunk"] for c in chunks] == list(range(len(chunks)))
    assert len(chunks) == -(-len(payload) // RAW_CHUNK)
    data = b"".join(base64.b64decode(c["output"]) for c in chunks)
    assert data == payload
    assert final["data"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert final["data"] | {} == final["data"]
    assert final["data"]["size"] == len(payload)
    assert final["data"]["encoding"] == "base64"
    assert final["data"]["chunks"] == len(chunks)
    assert any(r["type"] is ReplyType.PROGRESS for r in replies.sent)


async def test_file_fetch_refuses_escapes_and_oversized_files(tmp_path: Path) -> None:
    allowed = tmp_path / "dumps"
    allowed.mkdir()
    (tmp_path / "secret").write_text("x")
    (allowed / "link").symlink_to(tmp_path / "secret")
    (allowed / "big").write_bytes(b"x" * 2000)
    device = Device(tmp_path, fetch_paths=[allowed], max_fetch_bytes=1000)
    for path in (f"{allowed}/../secret", str(allowed / "link")):
        answer = result(await device.run("file.fetch", {"path": path}))
        assert answer["type"] is ReplyType.ERROR
        assert "outside the allowed fetch paths" in answer["output"]
    big = result(await device.run("file.fetch", {"path": str(allowed / "big")}))
    assert "max_fetch_bytes" in big["output"]
    nothing = result(await Device(tmp_path).run("file.fetch", {"path": str(allowed / "big")}))
    assert "policy.fetch_paths is empty" in nothing["output"]


# -- config.* ----------------------------------------------------------------------------------


async def test_config_set_keeps_the_old_value_and_undo_restores_it(tmp_path: Path) -> None:
    settings = tmp_path / "device.json"
    settings.write_text(json.dumps({"volume": 3, "secret_pin": "1234"}))
    settings.chmod(0o640)
    device = Device(tmp_path, config_file=settings, config_keys=["volume", "tray"])
    assert result(await device.run("config.get"))["data"]["values"] == {"volume": 3, "tray": None}
    changed = result(await device.run("config.set", {"key": "volume", "value": 7}))
    assert changed["data"] | {} == {"key": "volume", "old": 3, "new": 7, "existed": True}
    added = result(await device.run("config.set", {"key": "tray", "value": "A4"}))
    assert added["data"]["old"] is None
    assert not added["data"]["existed"]
    assert json.loads(settings.read_text()) == {"volume": 7, "tray": "A4", "secret_pin": "1234"}
    assert settings.stat().st_mode & 0o777 == 0o640
    undo = result(await device.run("config.undo"))
    assert undo["data"]["key"] == "tray"
    assert undo["data"]["removed"]
    undo = result(await device.run("config.undo"))
    assert (undo["data"]["old"], undo["data"]["new"]) == (7, 3)
    assert json.loads(settings.read_text()) == {"volume": 3, "secret_pin": "1234"}
    nothing = result(await device.run("config.undo"))
    assert nothing["type"] is ReplyType.ERROR
    assert "nothing to undo" in nothing["output"]
    secret = result(await device.run("config.get", {"key": "secret_pin"}))
    assert secret["type"] is ReplyType.ERROR
    assert "not in policy.config_keys" in secret["output"]
    journal = (tmp_path / "config-journal.jsonl").read_text().splitlines()
    assert [json.loads(line)["op"] for line in journal] == ["set", "set", "undo", "undo"]


# -- selftest ----------------------------------------------------------------------------------


class SelfTesting:
    def __init__(self, name: str, ok: bool | None) -> None:
        self.name = name
        self.ok = ok

    async def selftest(self, ctx: ActionContext) -> ActionResult:
        if self.ok is None:
            raise RuntimeError("sensor bus down")
        return ActionResult(ok=self.ok, output=f"{self.name} checked", data={"n": 1})


async def test_selftest_merges_every_plugin_and_fails_without_one(tmp_path: Path) -> None:
    good = result(await Device(tmp_path, plugins=[SelfTesting("a", True)]).run("selftest"))
    assert good["ok"] is True
    assert good["data"]["plugins"]["a"]["data"] == {"n": 1}
    mixed = result(
        await Device(tmp_path, plugins=[SelfTesting("a", True), SelfTesting("b", None)]).run("selftest")
    )
    assert mixed["ok"] is False
    assert "sensor bus down" in mixed["data"]["plugins"]["b"]["output"]
    none = result(await Device(tmp_path, plugins=[FakePlugin()]).run("selftest"))
    assert none["ok"] is False
    assert "no equipment plugin" in none["output"]
