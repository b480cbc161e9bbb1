"""``fleetcare server customer|site|assign-device|rebuild-states``: lines on stdout, errors as one
line with exit status 2."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import fleetcare_server as fleetcare


def test_customers_sites_and_assignment(tmp_path: Path) -> None:
    hours = '{"days": [0, 1, 2, 3, 4], "start": "07:00", "end": "19:00", "tz": "Europe/Berlin"}'
    created = fleetcare(
        tmp_path, "customer", "create", "St. Mary", "--criticality", "5", "--contract-hours", hours,
        "--cost-per-dispatch", "180",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    customer_id, name, *rest = created.stdout.strip().split("\t")
    assert (name, rest[0], rest[1]) == ("St. Mary", "criticality=5", "cost_per_dispatch=180")
    assert "Europe/Berlin" in rest[2]

    updated = fleetcare(
        tmp_path, "customer", "update", customer_id, "--contract-hours", "24x7", "--criticality", "4"
    )
    assert updated.returncode == 0, updated.stderr
    assert "criticality=4" in updated.stdout
    assert "contract_hours=24x7" in updated.stdout

    site = fleetcare(tmp_path, "site", "create", customer_id, "ER", "--criticality", "5")
    assert site.returncode == 0, site.stderr
    site_id = site.stdout.split("\t")[0]
    assert fleetcare(tmp_path, "site", "list", customer_id).stdout.startswith(f"{site_id}\tER")
    listed = fleetcare(tmp_path, "customer", "list")
    assert listed.stdout.count("\n") == 1

    duplicate = fleetcare(tmp_path, "customer", "create", "St. Mary")
    assert (duplicate.returncode, duplicate.stderr.strip()) == (
        2,
        "error: customer 'St. Mary' already exists",
    )
    bad = fleetcare(tmp_path, "customer", "create", "Other", "--contract-hours", '{"start": "8am"}')
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --contract-hours:")

    missing = fleetcare(tmp_path, "assign-device", "printer-9", "--site", site_id)
    assert (missing.returncode, missing.stderr.strip()) == (2, "error: device 'printer-9' not found")
    nothing = fleetcare(tmp_path, "assign-device", "printer-9")
    assert nothing.returncode == 2
    rebuilt = fleetcare(tmp_path, "rebuild-states")
    assert (rebuilt.returncode, rebuilt.stderr.strip()) == (0, "rebuilt 0 device(s)")
