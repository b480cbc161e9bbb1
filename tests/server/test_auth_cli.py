"""``fleetcare server create-user/set-password/assign/disable-user/audit verify`` in a
subprocess against a throwaway SQLite database (MQTT off)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from tests.support.cli import fleetcare_server


def run(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return fleetcare_server(tmp_path, *args, stdin=stdin, env={"FLEETCARE_AUTH__API_TOKEN_TTL_DAYS": "7"})


def test_user_administration_and_audit_verify(tmp_path: Path) -> None:
    refused = run(tmp_path, "create-user", "carl", "--role", "customer")
    assert refused.returncode == 2
    assert "--customer" in refused.stderr

    assert run(tmp_path, "customer", "create", "acme").returncode == 0
    carl = run(
        tmp_path, "create-user", "carl", "--role", "customer", "--customer", "acme", "--password-stdin",
        stdin="a long enough password\n",
    )  # fmt: skip
    assert carl.returncode == 0, carl.stderr
    assert carl.stdout.startswith("fct_")
    assert run(tmp_path, "create-user", "tina", "--role", "technician").returncode == 0
    assigned = run(tmp_path, "assign", "tina", "acme")
    assert assigned.returncode == 0, assigned.stderr
    wrong = run(tmp_path, "assign", "carl", "acme")
    assert wrong.returncode == 2
    assert "not a technician" in wrong.stderr
    assert (
        run(tmp_path, "set-password", "tina", "--password-stdin", stdin="another long password\n").returncode
        == 0
    )
    assert run(tmp_path, "disable-user", "carl").returncode == 0

    with sqlite3.connect(tmp_path / "cli.db") as db:
        rows = dict(
            db.execute("SELECT name, customer_id IS NOT NULL AND password_hash LIKE '$argon2id$%' FROM users")
        )
        assert rows == {"carl": 1, "tina": 0}
        assert db.execute("SELECT disabled_at IS NOT NULL FROM users WHERE name = 'carl'").fetchone() == (1,)
        # tokens from the CLI expire after auth.api_token_ttl_days by default
        assert db.execute("SELECT count(*) FROM api_tokens WHERE expires_at IS NULL").fetchone() == (0,)

    intact = run(tmp_path, "audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.startswith("audit log intact: ")

    with sqlite3.connect(tmp_path / "cli.db") as db:
        db.execute("UPDATE audit_log SET actor = 'user:mallory' WHERE chain_seq = 2")
    tampered = run(tmp_path, "audit", "verify")
    assert tampered.returncode == 1
    assert "entry #2" in tampered.stderr
