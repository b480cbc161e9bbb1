"""Run ``fleetcare server …`` in a subprocess against a throwaway SQLite database, MQTT off."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["fleetcare_server"]

ROOT = Path(__file__).resolve().parents[2]


def fleetcare_server(
    tmp_path: Path, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``fleetcare server ARGS`` on ``tmp_path/cli.db`` with MQTT off; ``env`` adds settings."""
    environment = {
        "PATH": "/usr/bin:/bin",
        "FLEETCARE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "FLEETCARE_MQTT__ENABLED": "false",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-c", "from fleetcare.cli import main; main()", "server", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
