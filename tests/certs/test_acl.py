"""The broker ACL's deny section (certs/acl.py) and the broker reload (certs/reload.py)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certs import (
    DenyEntry,
    PkiDir,
    PkiError,
    PkiMissingError,
    acl_text,
    init_pki,
    issue_device_cert,
    issue_server_cert,
    read_denied,
    refresh_acl,
    reload_broker,
    revoke_device,
    update_acl,
)

AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def deny(identity: str, source: str = "server") -> DenyEntry:
    return DenyEntry(identity, "retired", source, AT)


@pytest.fixture
def fresh(tmp_path: Path) -> PkiDir:
    return init_pki(tmp_path / "pki")


def test_a_denied_identity_is_denied_before_any_grant() -> None:
    text = acl_text(denied=[deny("printer-1")])
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[:2] == ["user printer-1", "topic deny #"]
    assert lines.index("topic deny #") < lines.index("pattern write fc/v1/d/%u/up/#")


def test_each_source_owns_its_own_entries(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    update_acl(acl, source="certs", denied=[deny("a", "certs")], create=True)
    change = update_acl(acl, source="server", denied=[deny("b"), deny("c")])
    assert change.added == {"b", "c"}
    assert not change.removed
    change = update_acl(acl, source="server", denied=[deny("c")])
    assert change.removed == {"b"}
    assert sorted((e.identity, e.source) for e in read_denied(acl)) == [("a", "certs"), ("c", "server")]


def test_an_unchanged_deny_list_does_not_rewrite_the_file(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    update_acl(acl, source="server", denied=[deny("b")], create=True)
    change = update_acl(acl, source="server", denied=[DenyEntry("b", "retired", "server", datetime.now(UTC))])
    assert not change.written
    assert not change.changed
    assert read_denied(acl)[0].at == AT  # the first time stays


def test_update_refuses_a_missing_file_unless_asked_to_create(tmp_path: Path) -> None:
    with pytest.raises(PkiMissingError, match="broker-config"):
        update_acl(tmp_path / "acl", source="server", denied=[])


def test_entries_of_another_source_and_bad_identities_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="from 'certs'"):
        update_acl(tmp_path / "acl", source="server", denied=[deny("a", "certs")], create=True)
    with pytest.raises(PkiError, match="invalid denied identity"):
        update_acl(tmp_path / "acl", source="server", denied=[deny("a/#")], create=True)
    with pytest.raises(PkiError, match="fleetcare-server"):
        acl_text(["printer-1"])


def test_refresh_denies_revoked_devices_and_grants_every_server_identity(
    fresh: PkiDir, tmp_path: Path
) -> None:
    issue_device_cert(fresh, "printer-1")
    issue_device_cert(fresh, "printer-2")
    issue_server_cert(fresh, "ingest-1")
    acl = tmp_path / "acl"
    refresh_acl(fresh, acl, create=True)
    update_acl(acl, source="server", denied=[deny("printer-2")])
    revoke_device(fresh, "printer-1")
    change = refresh_acl(fresh, acl)
    assert change.added == {"printer-1"}
    assert {(e.identity, e.source) for e in read_denied(acl)} == {
        ("printer-1", "certs"),
        ("printer-2", "server"),
    }
    text = acl.read_text()
    assert "user fleetcare-server-ingest-1\ntopic read fc/v1/d/+/up/#" in text


def test_a_reprovisioned_identity_is_let_in_again(fresh: PkiDir, tmp_path: Path) -> None:
    issue_device_cert(fresh, "printer-1")
    revoke_device(fresh, "printer-1")
    acl = tmp_path / "acl"
    refresh_acl(fresh, acl, create=True)
    issue_device_cert(fresh, "printer-1", overwrite=True)
    assert refresh_acl(fresh, acl).removed == {"printer-1"}
    assert read_denied(acl) == []


def test_reload_never_signals_a_process_that_is_not_mosquitto(tmp_path: Path) -> None:
    pid_file = tmp_path / "mosquitto.pid"
    assert not reload_broker(None).reloaded
    assert "no pid file" in reload_broker(pid_file).detail
    pid_file.write_text(f"{os.getpid()}\n")  # this test runner: a stale pid file pointing at us
    outcome = reload_broker(pid_file)
    assert not outcome.reloaded
    assert "not mosquitto" in outcome.detail
    assert "reload the broker yourself" in outcome.detail
    pid_file.write_text("garbage")
    assert "does not hold a process id" in reload_broker(pid_file).detail
