"""``fleetcare kpi``: the golden scenario in the terminal and as CSV; errors as one line, exit 2."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.kpi import golden

PERIOD = ["--from", "2026-03-02", "--to", "2026-03-09", "--as-of", "2026-06-01"]


@pytest.fixture(scope="module")
def golden_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    return golden.sqlite_database(tmp_path_factory.mktemp("kpi-cli") / "golden.db")


def fleetcare(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from fleetcare.cli import main; main()", "kpi", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "250", "FLEETCARE_MQTT__ENABLED": "false"},
        cwd=cwd or Path(__file__).resolve().parents[3],
        check=False,
        timeout=60,
    )


def test_report_prints_every_kpi_readably(golden_sqlite: str) -> None:
    result = fleetcare("report", *PERIOD, "--database-url", golden_sqlite)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "KPIs [2026-03-02T00:00:00Z, 2026-03-09T00:00:00Z)" in out
    availability = 364.5 / 402  # see golden.py: uptime / known
    assert f"{100 * availability:.2f} %" in out
    assert "2.5 d" in out  # MTBF = 364.5 h / 6 = 60.75 h
    for label in (
        "Availability (pessimistic)",
        "Self-resolution rate",
        "First-time fix rate",
        "Open at period end",
    ):
        assert label in out
    # downtime avoided: 7.5 h + 1 min against the default 8 h baseline (golden.py), shown in hours
    assert "Downtime avoided (estimate)" in out
    assert f"{sum(golden.downtime_avoided().values()) / golden.HOUR:.1f} h" in out


def test_report_downtime_avoided_against_the_configured_baseline(golden_sqlite: str, tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'database_url = "{golden_sqlite}"\n[mqtt]\nenabled = false\n[kpi]\nbaseline_restore_hours = 12\n'
    )
    for args in (
        ["--config", str(config)],
        ["--database-url", golden_sqlite, "--baseline-restore-hours", "12"],
    ):
        result = fleetcare("report", *PERIOD, "--csv", *args)
        assert result.returncode == 0, result.stderr
        [row] = list(csv.DictReader(io.StringIO(result.stdout)))
        expected = sum(golden.downtime_avoided(12 * golden.HOUR).values())
        assert float(row["downtime_avoided_s"]) == pytest.approx(expected), args


def test_report_by_customer_and_csv(golden_sqlite: str, tmp_path: Path) -> None:
    grouped = fleetcare("report", *PERIOD, "--by", "customer", "--database-url", golden_sqlite)
    assert grouped.returncode == 0, grouped.stderr
    assert "Acme Hospital" in grouped.stdout
    assert "Borealis Labs" in grouped.stdout

    config = tmp_path / "server.toml"
    config.write_text(f'database_url = "{golden_sqlite}"\n[mqtt]\nenabled = false\n')
    as_csv = fleetcare("report", *PERIOD, "--by", "customer", "--csv", "--config", str(config))
    assert as_csv.returncode == 0, as_csv.stderr
    rows = {row["group"]: row for row in csv.DictReader(io.StringIO(as_csv.stdout))}
    assert set(rows) == {"Acme Hospital", "Borealis Labs"}
    borealis = golden.customer_expectations()[2]
    assert float(rows["Borealis Labs"]["downtime_s"]) == borealis["downtime_s"]
    assert int(rows["Borealis Labs"]["first_time_fixes"]) == borealis["first_time_fixes"]

    reference = fleetcare(
        "report", *PERIOD, "--by", "customer", "--csv", "--engine", "reference", "--config", str(config)
    )
    assert reference.returncode == 0, reference.stderr
    again = {row["group"]: row for row in csv.DictReader(io.StringIO(reference.stdout))}
    for name in ("availability", "mtbf_s", "mtrs_p90_s", "dispatches_avoided_value"):
        assert float(again["Acme Hospital"][name]) == pytest.approx(
            float(rows["Acme Hospital"][name]), rel=1e-12
        )


def test_report_errors_are_one_line_exit_2(golden_sqlite: str) -> None:
    backwards = fleetcare(
        "report", "--from", "2026-03-09", "--to", "2026-03-02", "--database-url", golden_sqlite
    )
    assert backwards.returncode == 2
    assert backwards.stderr.strip() == (
        "error: from (2026-03-09T00:00:00+00:00) must be before to (2026-03-02T00:00:00+00:00)"
    )
    garbled = fleetcare("report", "--from", "soon", "--to", "2026-03-02", "--database-url", golden_sqlite)
    assert garbled.returncode == 2
    assert "error: --from: 'soon' is not a date or time" in garbled.stderr
    planet = fleetcare("report", *PERIOD, "--by", "planet", "--database-url", golden_sqlite)
    assert planet.returncode == 2
    assert "planet" in planet.stderr


def test_definitions_lists_every_kpi() -> None:
    result = fleetcare("definitions", "--json")
    assert result.returncode == 0, result.stderr
    assert '"mtbf_censored"' in result.stdout
    assert "never infinity" in result.stdout
