"""The real ``fleetcare`` CLI on a bare host, in a subprocess with no broker settings at all:
user administration needs only the database (``server run`` still needs the certificates, and
says which), and the commands that read (``kpi report``, ``server customer list``) never create
or migrate a database: a missing, empty or out-of-date one is a one-line error, exit 2."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from server.db import run_migrations
from server.db.migrate import alembic_config
from tests.server.kpi import golden
from tests.support.databases import PostgresUnavailable, sqlite_url, temporary_postgres_database
from tests.support.server import V1, api_client, server_settings

PERIOD = ["--from", "2026-03-02", "--to", "2026-03-09", "--as-of", "2026-06-01"]
WHERE_THE_DATABASE_COMES_FROM = ("--config", "FLEETCARE_DATABASE_URL")


def fleetcare(
    cwd: Path,
    *args: str,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    """``fleetcare ARGS`` in ``cwd``; the environment has no FLEETCARE_MQTT__* variable."""
    environment = {"PATH": "/usr/bin:/bin", "COLUMNS": "250", **(env or {})}
    if database_url is not None:
        environment["FLEETCARE_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-c", "from fleetcare.cli import main; main()", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        check=False,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


async def api_login(url: str, name: str, password: str) -> int:
    async with api_client(server_settings(url)) as (client, _runtime):
        answer = await client.post(f"{V1}/auth/login", json={"username": name, "password": password})
        return answer.status_code


def test_user_administration_needs_only_the_database(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fleet.db")
    created = fleetcare(
        tmp_path, "server", "create-user", "ada", "--role", "ops", "--password-stdin",
        database_url=url, stdin="the first long password\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("fct_")
    changed = fleetcare(
        tmp_path, "server", "set-password", "ada", "--password-stdin",
        database_url=url, stdin="the second long password\n",
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert "password of 'ada' set" in changed.stderr
    assert asyncio.run(api_login(url, "ada", "the second long password")) == 200
    assert asyncio.run(api_login(url, "ada", "the first long password")) == 401


def test_server_run_without_certificates_names_the_setting(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fleet.db")
    line = one_line_error(fleetcare(tmp_path, "server", "run", database_url=url))
    assert line.startswith("error: setting mqtt.ca_file: is required (the broker connection is mutual TLS)")
    assert "FLEETCARE_MQTT__CA_FILE" in line
    ca = tmp_path / "ca.crt"
    ca.write_text("not checked here: only that the file is there\n")
    missing = tmp_path / "server.crt"
    env = {"FLEETCARE_MQTT__CA_FILE": str(ca), "FLEETCARE_MQTT__CERT_FILE": str(missing)}
    line = one_line_error(fleetcare(tmp_path, "server", "run", database_url=url, env=env))
    assert line == f"error: setting mqtt.cert_file: {str(missing)!r} is not a readable file"
    assert not (tmp_path / "fleet.db").exists()  # refused before the database was touched


@pytest.mark.parametrize(
    ("command", "hint"),
    [
        (["kpi", "report", *PERIOD], "--database-url"),
        (["server", "customer", "list"], "--config server.toml (database_url)"),
    ],
    ids=["kpi-report", "customer-list"],
)
def test_reading_commands_never_create_a_database(tmp_path: Path, command: list[str], hint: str) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    line = one_line_error(fleetcare(bare, *command))
    assert "no database at './var/fleetcare.db' (the file does not exist)" in line
    for named in (hint, *WHERE_THE_DATABASE_COMES_FROM):
        assert named in line
    assert list(bare.iterdir()) == []  # no ./var, no file

    empty = tmp_path / "empty.db"
    empty.touch()
    line = one_line_error(fleetcare(tmp_path, *command, database_url=sqlite_url(empty)))
    assert "is not a fleetcare database (no fleetcare tables)" in line
    assert "fleetcare server migrate" in line
    assert empty.stat().st_size == 0  # not migrated behind the user's back

    behind = sqlite_url(tmp_path / "behind.db")
    script = ScriptDirectory.from_config(alembic_config(behind))
    head = script.get_current_head()
    assert head is not None
    previous = script.get_revision(head).down_revision
    assert isinstance(previous, str)
    run_migrations(behind, revision=previous)
    line = one_line_error(fleetcare(tmp_path, *command, database_url=behind))
    assert f"is at schema revision {previous}, this version needs {head}" in line
    assert line.endswith("run `fleetcare server migrate` first")

    migrated = sqlite_url(tmp_path / "fleet.db")
    run_migrations(migrated)
    works = fleetcare(tmp_path, *command, database_url=migrated)
    assert works.returncode == 0, works.stderr


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    """A new PostgreSQL database with nothing in it (skips when no server is reachable)."""
    try:
        with temporary_postgres_database("fc_test") as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.postgres
def test_reading_commands_refuse_an_unmigrated_postgresql_database(
    empty_postgres: str, tmp_path: Path
) -> None:
    for command in (["kpi", "report", *PERIOD], ["server", "customer", "list"]):
        line = one_line_error(fleetcare(tmp_path, *command, database_url=empty_postgres))
        assert "is not a fleetcare database (no fleetcare tables)" in line, command
        assert "fleetcare server migrate" in line
    with psycopg.connect(empty_postgres.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)  # nothing was created or migrated


@pytest.fixture
def golden_db(tmp_path: Path) -> str:
    return golden.sqlite_database(tmp_path / "golden.db")


def test_kpi_report_customer_by_name_or_id(golden_db: str, tmp_path: Path) -> None:
    borealis = golden.customer_expectations()[2]

    def report(customer: str) -> subprocess.CompletedProcess[str]:
        return fleetcare(
            tmp_path, "kpi", "report", *PERIOD, "--json", "--customer", customer, database_url=golden_db
        )

    for ref in ("Borealis Labs", "borealis labs", "2"):
        result = report(ref)
        assert result.returncode == 0, (ref, result.stderr)
        body = json.loads(result.stdout)
        assert body["filters"] == {"customer": 2}, ref
        [row] = body["rows"]
        assert row["kpis"]["downtime_s"] == borealis["downtime_s"], ref

    assert one_line_error(report("Nobody Inc")) == "error: customer 'Nobody Inc' not found"
    for name, number in (("BOREALIS LABS", 3), ("1", 4)):
        created = fleetcare(tmp_path, "server", "customer", "create", name, database_url=golden_db)
        assert created.stdout.startswith(f"{number}\t{name}\t"), created.stderr
    assert one_line_error(report("borealis labs")) == (
        "error: customer 'borealis labs' is ambiguous: it could be #2 'Borealis Labs', "
        "#3 'BOREALIS LABS'; give the id"
    )
    assert json.loads(report("BOREALIS LABS").stdout)["filters"] == {"customer": 3}  # exact wins
    assert one_line_error(report("1")) == (
        "error: customer '1' is ambiguous: it could be #4 '1', #1 'Acme Hospital'; "
        "give the name of the one with that id, or the other's id"
    )
    assert json.loads(report("4").stdout)["filters"] == {"customer": 4}
