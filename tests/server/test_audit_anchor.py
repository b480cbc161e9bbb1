"""Signed anchors of the audit chain's head (server/anchors/anchor.py), on SQLite and
PostgreSQL: the two attacks the chain alone cannot see (test_audit_chain.py) — deleting the
newest entries, and rebuilding an edited chain — are reported against the anchors, as is a
forged anchor; the server's anchorer task anchors after a seal and survives a broken file."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from certs import PkiDir
from server.anchors import anchor as audit_anchor
from server.anchors import anchorer as audit_anchorer
from server.anchors.anchor import Anchor, AuditCheck
from server.anchors.anchorer import AuditAnchorer
from server.base import audit
from server.db import create_engine, create_sessionmaker, run_migrations
from server.db.models import Role
from server.settings import load_settings
from tests.server.test_audit_chain import add_entries, tamper, verify
from tests.support.cli import fleetcare_server
from tests.support.server import V1, api_client, bearer, create_token, server_settings
from tests.support.waiting import eventually

Sessions = async_sessionmaker[AsyncSession]
KEY = Ed25519PrivateKey.generate()
KEYS = {protocol.key_id(KEY.public_key()): KEY.public_key()}


def anchorer(sessions: Sessions, path: Path, **options: float) -> AuditAnchorer:
    timing = {"interval": 60.0, "min_gap": 0.0, "timeout": 5.0, **options}
    return AuditAnchorer(sessions, path=path, key=KEY, server="test@host", **timing)


async def anchor_now(sessions: Sessions, path: Path) -> Anchor:
    """Seal, then anchor the head as the server does."""
    await verify(sessions)
    anchor = await anchorer(sessions, path).anchor_once()
    assert anchor is not None
    return anchor


async def check(sessions: Sessions, path: Path) -> AuditCheck:
    async with sessions() as session:
        return await audit_anchor.verify_anchored(session, anchors=path, keys=KEYS)


# --- the anchor itself -------------------------------------------------------------------------


def test_an_anchor_round_trips_through_its_line_and_a_log_line(tmp_path: Path) -> None:
    anchor = audit_anchor.sign_anchor(KEY, audit.ChainHead(7, "a" * 64), server="s1@h")
    assert audit_anchor.parse_anchor(anchor.line(), KEYS) == anchor
    assert json.loads(anchor.line())["kid"] == protocol.key_id(KEY.public_key())
    # the signature covers the domain prefix: it is no signature of the bare body (nor a command's)
    signature = base64.urlsafe_b64decode(anchor.sig + "==")
    bare = json.dumps(anchor.body(), sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(InvalidSignature):
        KEY.public_key().verify(signature, bare)
    KEY.public_key().verify(signature, audit_anchor.DOMAIN + bare)
    log = tmp_path / "server.log"
    log.write_text(
        f"2026-12-07 INFO server.x: other\n2026-12-07 INFO x: {audit_anchor.LOG_MARKER} {anchor.line()}\n"
    )
    found = audit_anchor.read_anchors(log, KEYS)
    assert [(line, a) for line, a in found.anchors] == [(2, anchor)]
    assert not found.forged


@pytest.mark.parametrize(
    "edit",
    [
        lambda data: data | {"chain_seq": data["chain_seq"] - 1},  # an older head: hides a truncation
        lambda data: data | {"hash": "b" * 64},
        lambda data: data | {"at": "2020-01-01T00:00:00.000000+00:00"},
        lambda data: data | {"sig": data["sig"][:-4] + "AAAA"},
    ],
    ids=["chain_seq", "hash", "at", "sig"],
)
def test_an_edited_anchor_is_forged(tmp_path: Path, edit: object) -> None:
    anchor = audit_anchor.sign_anchor(KEY, audit.ChainHead(7, "a" * 64), server="s1@h")
    edited = edit(json.loads(anchor.line()))  # type: ignore[operator]
    path = tmp_path / "anchors.jsonl"
    path.write_text(anchor.line() + "\n" + json.dumps(edited) + "\n")
    found = audit_anchor.read_anchors(path, KEYS)
    assert [line for line, _ in found.anchors] == [1]
    assert [(p.kind, p.line) for p in found.forged] == [("forged", 2)]
    assert "does not verify" in found.forged[0].message


def test_an_anchor_signed_with_another_key_or_not_an_anchor_is_forged(tmp_path: Path) -> None:
    other = audit_anchor.sign_anchor(Ed25519PrivateKey.generate(), audit.ChainHead(3, "c" * 64), server="x")
    path = tmp_path / "anchors.jsonl"
    path.write_text(f'{other.line()}\n{{"v": 1}}\n{{not json\n\n')
    found = audit_anchor.read_anchors(path, KEYS)
    assert found.anchors == []
    assert [p.line for p in found.forged] == [1, 2, 3]
    assert "not by the anchor key" in found.forged[0].message
    # the last line cut short by a crash is a warning, not a forgery
    path.write_text(f"{other.line()[:30]}")
    cut = audit_anchor.read_anchors(path, KEYS)
    assert cut.forged == []
    assert "incomplete" in cut.warnings[0]


# --- the attacks, against the database ---------------------------------------------------------


async def test_an_honest_chain_holds_every_anchor(sessions: Sessions, tmp_path: Path) -> None:
    path = tmp_path / "anchors.jsonl"
    for start in (0, 4, 8):
        await add_entries(sessions, 4, start=start)
        await anchor_now(sessions, path)
    result = await check(sessions, path)
    assert result.ok, result.lines()
    assert (result.anchors.anchors, result.anchors.checked) == (3, 3)
    assert result.anchors.newest is not None
    assert result.anchors.newest.chain_seq == 12
    assert result.summary().startswith("audit log intact: 12 entries")
    assert "3 of 3 anchors checked, newest #12" in result.summary()
    await add_entries(sessions, 2, start=12)  # entries newer than the newest anchor are fine
    assert (await check(sessions, path)).ok


async def test_a_forged_anchor_line_makes_the_log_tampered(sessions: Sessions, tmp_path: Path) -> None:
    await add_entries(sessions, 3)
    path = tmp_path / "anchors.jsonl"
    anchor = await anchor_now(sessions, path)
    with path.open("a") as fh:  # an attacker "anchors" a shorter head to cover a truncation
        fh.write(json.dumps(json.loads(anchor.line()) | {"chain_seq": 1}) + "\n")
    result = await check(sessions, path)
    assert not result.ok
    assert [p.kind for p in result.anchors.problems] == ["forged"]
    assert result.summary().startswith("audit log TAMPERED (forged): line 2")


async def test_deleting_the_newest_entries_is_detected_as_truncated(
    sessions: Sessions, tmp_path: Path
) -> None:
    """Issue 13: the attack of test_the_chain_alone_does_not_see_its_newest_entries_removed."""
    await add_entries(sessions, 10)
    path = tmp_path / "anchors.jsonl"
    anchor = await anchor_now(sessions, path)
    await tamper(sessions, "DELETE FROM audit_log WHERE chain_seq > 7")
    assert (await verify(sessions)).ok  # the chain alone: a shorter, intact log

    result = await check(sessions, path)
    assert not result.ok
    assert result.chain.ok
    (problem,) = result.anchors.problems
    assert (problem.kind, problem.chain_seq, problem.hash, problem.line) == ("truncated", 10, anchor.hash, 1)
    summary = result.summary()
    assert summary.startswith("audit log TAMPERED (truncated): the chain ends at #7")
    assert "recorded #10" in summary
    assert anchor.hash in summary
    assert "3 newest entries were removed" in summary

    # new entries after the deletion refill the numbers, with other hashes: still caught
    await add_entries(sessions, 5, start=10)
    refilled = await check(sessions, path)
    assert [(p.kind, p.chain_seq) for p in refilled.anchors.problems] == [("rewritten", 10)]


async def test_a_rebuilt_chain_is_detected_as_rewritten(sessions: Sessions, tmp_path: Path) -> None:
    """Issue 13: the attack of test_the_chain_alone_does_not_see_a_rebuilt_chain."""
    path = tmp_path / "anchors.jsonl"
    await add_entries(sessions, 3)
    first = await anchor_now(sessions, path)  # #3
    await add_entries(sessions, 3, start=3)
    second = await anchor_now(sessions, path)  # #6
    await tamper(sessions, "UPDATE audit_log SET actor = 'user:mallory' WHERE chain_seq = 5")
    await tamper(sessions, "UPDATE audit_log SET chain_seq = NULL, hash = NULL WHERE chain_seq >= 5")
    rebuilt = await verify(sessions)  # re-seals: a fresh, intact-looking chain
    assert rebuilt.ok
    assert rebuilt.head_seq == 6

    result = await check(sessions, path)
    assert not result.ok
    (problem,) = result.anchors.problems
    assert (problem.kind, problem.chain_seq, problem.hash, problem.found) == (
        "rewritten",
        6,
        second.hash,
        rebuilt.head_hash,
    )
    assert result.anchors.checked == 2  # #3 still matches: the rewrite is after it
    assert result.summary().startswith(
        f"audit log TAMPERED (rewritten): entry #6 has hash {rebuilt.head_hash}"
    )
    assert second.hash in result.summary()
    assert first.chain_seq == 3


async def test_verify_without_anchors_says_so(sessions: Sessions, tmp_path: Path) -> None:
    await add_entries(sessions, 2)
    async with sessions() as session:
        missing = await audit_anchor.verify_anchored(session, anchors=tmp_path / "none.jsonl", keys=KEYS)
        unset = await audit_anchor.verify_anchored(session, anchors=None, keys=KEYS)
        keyless = await audit_anchor.verify_anchored(session, anchors=tmp_path / "none.jsonl", keys={})
    for result in (missing, unset, keyless):
        assert result.ok  # nothing proves tampering; the warning says nothing proves its absence
        assert "cannot be detected" in result.lines()[-1]


# --- the server task ---------------------------------------------------------------------------


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[None]]]:
    started: list[asyncio.Task[None]] = []
    yield started
    for task in started:
        task.cancel()
    await asyncio.gather(*started, return_exceptions=True)


async def test_the_anchorer_anchors_after_a_seal_and_survives_a_broken_file(
    sessions: Sessions, tmp_path: Path, tasks: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    task = anchorer(sessions, blocker / "anchors.jsonl", interval=0.1)  # mkdir fails: NotADirectoryError
    tasks.append(asyncio.create_task(audit_anchorer.run_sealer(sessions, 0.05, on_sealed=task.notify)))
    tasks.append(asyncio.create_task(task.run()))
    caplog.set_level(logging.INFO, logger="server.anchors.anchorer")

    await add_entries(sessions, 4)
    await eventually(lambda: task.stats.failed >= 2, timeout=10)
    assert task.stats.written == 0
    assert str(blocker) in (task.stats.last_error or "")
    assert "anchoring to" in caplog.text
    assert "failed" in caplog.text
    # the anchor went to the log stream anyway
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith(audit_anchor.LOG_MARKER)]
    assert logged
    assert audit_anchor.parse_anchor(logged[-1].split(" ", 1)[1], KEYS).chain_seq == 4

    task.path = tmp_path / "anchors.jsonl"  # the disk is back: the task is still running
    assert all(not t.done() for t in tasks)
    await eventually(lambda: task.stats.written >= 1, timeout=10)
    async with sessions() as session:
        head = await audit.head(session)
    assert task.stats.last is not None
    assert (task.stats.last.chain_seq, task.stats.last.hash) == head

    await add_entries(sessions, 2, start=4)  # the next seal is anchored too
    await eventually(lambda: task.stats.last is not None and task.stats.last.chain_seq == 6, timeout=10)
    assert (await check(sessions, task.path)).ok


async def test_a_stalled_write_times_out_and_the_task_goes_on(
    sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_append = audit_anchor.append_anchor

    def stalled(path: Path, anchor: Anchor) -> None:
        release.wait(10)
        real_append(path, anchor)

    monkeypatch.setattr(audit_anchorer, "append_anchor", stalled)
    await add_entries(sessions, 2)
    await verify(sessions)
    task = anchorer(sessions, tmp_path / "anchors.jsonl", timeout=0.2)
    assert await task.anchor_once() is None
    assert task.stats.last_error == "timed out after 0.2s"
    assert await task.anchor_once() is None  # no second write piles up behind the stalled one
    assert "has not finished" in (task.stats.last_error or "")
    assert task.stats.failed == 2
    release.set()

    async def anchored() -> bool:
        # The released write still has to finish after it creates the file: until it has,
        # anchor_once refuses to pile a second write behind it, so retry rather than race it.
        return await task.anchor_once() is not None

    await eventually(anchored, timeout=5, what="an anchor written once the stalled write finished")


async def test_the_anchorer_resumes_its_file_and_raises_the_alarm_on_truncation(
    sessions: Sessions, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "anchors.jsonl"
    await add_entries(sessions, 5)
    anchor = await anchor_now(sessions, path)
    await tamper(sessions, "DELETE FROM audit_log WHERE chain_seq > 2")

    restarted = anchorer(sessions, path)
    await restarted._resume()
    assert restarted.stats.last == anchor
    caplog.set_level(logging.ERROR, logger="server.anchors.anchorer")
    again = await restarted.anchor_once()  # the shorter head is anchored too; verify keeps both
    assert again is not None
    assert again.chain_seq == 2
    assert restarted.stats.tamper_alerts == 1
    assert "no longer holds the head" in caplog.text
    assert "entries removed" in caplog.text
    assert [p.kind for p in (await check(sessions, path)).anchors.problems] == ["truncated"]


def test_the_default_anchor_file_is_beside_a_sqlite_database(tmp_path: Path) -> None:
    sqlite = load_settings(
        None, database_url=f"sqlite+aiosqlite:///{tmp_path}/x/fleet.db", mqtt={"enabled": False}
    )
    assert audit_anchor.anchor_file(sqlite) == tmp_path / "x" / "fleet-audit-anchors.jsonl"
    postgres = load_settings(None, database_url="postgresql+psycopg://u@h/db", mqtt={"enabled": False})
    assert audit_anchor.anchor_file(postgres) is None
    chosen = load_settings(
        None,
        database_url="postgresql+psycopg://u@h/db",
        mqtt={"enabled": False},
        auth={"audit_anchor_file": "/a/b"},
    )
    assert audit_anchor.anchor_file(chosen) == Path("/a/b")


# --- the API and the CLI -----------------------------------------------------------------------


async def test_the_api_reports_a_truncation_with_the_anchored_head(
    db_url: str, pki: PkiDir, tmp_path: Path
) -> None:
    path = tmp_path / "anchors.jsonl"
    settings = server_settings(
        db_url,
        pki=pki,
        incidents={"enabled": False},
        auth={"audit_anchor_file": str(path), "audit_anchor_interval": 0.2, "audit_anchor_min_gap": 0},
    )
    async with api_client(settings) as (client, runtime):
        admin = bearer(await create_token(runtime, "root", Role.ADMIN))
        await add_entries(runtime.sessions, 6)

        async def anchored_head() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get(f"{V1}/audit/verify", headers=admin)).json()
            newest = body["anchors"]["newest"]
            return body if newest is not None and newest["chain_seq"] == body["head_seq"] else None

        intact = await eventually(anchored_head, timeout=10, what="the anchorer anchors the head")
        assert intact["ok"] is True, intact
        assert intact["anchors"]["anchors"] >= 1
        assert intact["anchors"]["problems"] == []
        newest = intact["anchors"]["newest"]

        await tamper(runtime.sessions, "DELETE FROM audit_log WHERE chain_seq > 1")
        body = (await client.get(f"{V1}/audit/verify", headers=admin)).json()
    assert body["ok"] is False
    assert body["problem"] is None  # the chain alone is intact
    problem = body["anchors"]["problems"][0]
    assert (problem["kind"], problem["chain_seq"], problem["hash"]) == (
        "truncated",
        newest["chain_seq"],
        newest["hash"],
    )
    assert body["message"].startswith("audit log TAMPERED (truncated)")
    assert {"entries", "head_seq", "head_hash", "sealed_now", "problem", "message"} <= set(body)


def test_cli_audit_verify_exits_1_on_a_truncated_log(tmp_path: Path) -> None:
    key_file = tmp_path / "anchor.key"
    key_file.write_bytes(
        KEY.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    database = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    settings = load_settings(None, database_url=database, mqtt={"enabled": False}, signing_key_file=key_file)

    async def prepare() -> None:
        await asyncio.to_thread(run_migrations, database)
        engine = create_engine(database)
        try:
            sessions = create_sessionmaker(engine)
            await add_entries(sessions, 5)
            await verify(sessions)
            made = AuditAnchorer.from_settings(settings, sessions)
            assert made is not None
            assert made.path == tmp_path / "cli-audit-anchors.jsonl"
            assert await made.anchor_once() is not None
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    env = {"FLEETCARE_SIGNING_KEY_FILE": str(key_file)}
    intact = fleetcare_server(tmp_path, "audit", "verify", env=env)
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.startswith("audit log intact: 5 entries")
    assert "1 of 1 anchors checked, newest #5" in intact.stdout

    with sqlite3.connect(tmp_path / "cli.db") as db:
        db.execute("DELETE FROM audit_log WHERE chain_seq > 3")
    tampered = fleetcare_server(tmp_path, "audit", "verify", env=env)
    assert tampered.returncode == 1
    assert tampered.stderr.startswith("audit log TAMPERED (truncated): the chain ends at #3")
    assert "recorded #5 with hash " in tampered.stderr

    # without the key the anchors cannot be checked: a warning, not a silent OK
    keyless = fleetcare_server(tmp_path, "audit", "verify")
    assert keyless.returncode == 0
    assert "WARNING: no anchor key" in keyless.stderr
    # an auditor with only the public key, and another key: every anchor is forged
    other = tmp_path / "other.pub"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    forged = fleetcare_server(tmp_path, "audit", "verify", "--public-key", str(other))
    assert forged.returncode == 1
    assert "TAMPERED (forged)" in forged.stderr
