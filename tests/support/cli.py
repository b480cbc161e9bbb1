"""Run ``fleetcare server …`` in a subprocess against a throwaway SQLite database, MQTT off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["fleetcare_server"]

ROOT = Path(__file__).resolve().parents[2]


def fleetcare_server(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "FLEETCARE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "FLEETCARE_MQTT__ENABLED": "false",
    }
    return subprocess.run(
        [sys.executable, "-c", "from fleetcare.cli import main; main()", "server", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
