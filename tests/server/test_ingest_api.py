"""``GET /api/v1/ingest/quarantine`` and the ingest counters, through the API (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
from datetime import timedelta

from certs import PkiDir
from server.db.models import Role
from server.ingest import BatchWriter, Quarantined
from tests.server import factory as f
from tests.support.server import V1, api_client, bearer, create_token, server_settings


def _kept(minutes: int, payload: bytes, device_id: str | None = "dev-qa") -> Quarantined:
    topic = f"fc/v1/d/{device_id}/up/event" if device_id else "weird/topic"
    return Quarantined(
        f.NOW + timedelta(minutes=minutes), topic, device_id, None, payload, "RuntimeError", f"boom {minutes}"
    )


async def test_quarantine_lists_newest_first_with_text_or_base64_payloads(db_url: str, pki: PkiDir) -> None:
    long_text = b"a" + ("é" * 3000).encode()  # 6001 bytes: the cut at 4096 splits an "é"
    binary = b"\xff\x00\xfe"
    async with api_client(server_settings(db_url, pki=pki)) as (client, runtime):
        await BatchWriter(runtime.sessions).quarantine(
            [_kept(1, b'{"v": 1}'), _kept(3, binary), _kept(2, long_text), _kept(4, b"x", device_id=None)]
        )
        ops = bearer(await create_token(runtime, "ops-q", Role.OPS))
        page = (await client.get(f"{V1}/ingest/quarantine", headers=ops)).json()
        assert page["total"] == 4
        assert [item["reason"] for item in page["items"]] == ["boom 4", "boom 3", "boom 2", "boom 1"]
        nodevice, raw, long, text = page["items"]
        assert nodevice["device_id"] is None
        assert (raw["payload_encoding"], base64.b64decode(raw["payload"])) == ("base64", binary)
        assert (text["payload_encoding"], text["payload"], text["payload_truncated"]) == (
            "utf-8",
            '{"v": 1}',
            False,
        )
        assert (long["payload_size"], long["payload_truncated"]) == (len(long_text), True)
        assert long["payload"] == "a" + "é" * 2047  # the split character dropped, still text
        assert (text["error"], text["seq"], text["topic"]) == (
            "RuntimeError",
            None,
            "fc/v1/d/dev-qa/up/event",
        )

        second = (await client.get(f"{V1}/ingest/quarantine?limit=2&offset=2", headers=ops)).json()
        assert [item["reason"] for item in second["items"]] == ["boom 2", "boom 1"]
        only = (await client.get(f"{V1}/ingest/quarantine?device=dev-qa", headers=ops)).json()
        assert only["total"] == 3

        tech = bearer(await create_token(runtime, "tech-q", Role.TECHNICIAN))
        assert (await client.get(f"{V1}/ingest/quarantine", headers=tech)).status_code == 403
        bad = await client.get(f"{V1}/ingest/quarantine?limit=100000", headers=ops)
        assert bad.status_code == 422
        assert "limit" in bad.text


async def test_stats_expose_refused_and_quarantined_counters(db_url: str, pki: PkiDir) -> None:
    async with api_client(server_settings(db_url, pki=pki)) as (client, runtime):
        runtime.stats.refused["revoked"] += 2
        runtime.stats.quarantined["OverflowError"] += 1
        ops = bearer(await create_token(runtime, "ops-s", Role.OPS))
        stats = (await client.get(f"{V1}/ingest/stats", headers=ops)).json()
        assert (stats["refused"], stats["refused_total"]) == ({"revoked": 2}, 2)
        assert (stats["quarantined"], stats["quarantined_total"]) == ({"OverflowError": 1}, 1)
        assert stats["quarantine_failed"] == 0
