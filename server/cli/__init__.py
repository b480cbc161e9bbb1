"""``fleetcare server``: run the fleet server and administer it — users and tokens, customers
and sites, the audit log, devices and quarantined messages. One module per group of commands;
each registers its commands on the one app (server/cli/common.py)."""

from __future__ import annotations

from server.cli.common import app

# isort: off
# Imported for the commands they register, in the order `fleetcare server --help` lists them.
from server.cli import run, people, audit, customers, devices

# isort: on

__all__ = ["app"]

_COMMANDS = (run, people, audit, customers, devices)
