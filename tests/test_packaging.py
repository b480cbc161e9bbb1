"""A device that installs only the ``agent`` extra must get a working ``fleetcare agent``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_ONLY = [
    "fastapi",
    "sqlalchemy",
    "alembic",
    "uvicorn",
    "aiosqlite",
    "psycopg",
    "amqtt",
    "httpx",
    "server",
    "simulators",
]

# Runs in a fresh interpreter in which every server-only module fails to import, as on a device.
BLOCKED_RUN = """
import importlib.abc, sys
BLOCKED = set({blocked!r})
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not installed on this device")
        return None
sys.meta_path.insert(0, Block())
from fleetcare.cli import main
main({argv!r})
"""


def _run_blocked(argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = BLOCKED_RUN.format(blocked=SERVER_ONLY, argv=argv)
    return subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_agent_cli_works_without_server_dependencies() -> None:
    result = _run_blocked(["agent", "--help"])
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout
    assert "check-config" in result.stdout


def test_certs_cli_works_without_server_dependencies() -> None:
    result = _run_blocked(["certs", "--help"])
    assert result.returncode == 0, result.stderr


def test_server_cli_without_its_extra_explains_what_to_install() -> None:
    result = _run_blocked(["server", "run"])
    assert result.returncode == 2
    assert "pip install 'fleetcare[server]'" in result.stderr


def test_agent_extra_stays_small() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {
        dep.split(">")[0].split("[")[0].split("=")[0] for dep in project["optional-dependencies"]["agent"]
    }
    names |= {dep.split(">")[0].split("[")[0] for dep in project["dependencies"]}
    assert names <= {"aiomqtt", "psutil", "cryptography", "pydantic", "typer"}
