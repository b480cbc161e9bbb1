"""Reload a running Mosquitto (SIGHUP) found through its pid file: CRL and ACL are re-read.

``write_mosquitto_config`` gives the broker a ``pid_file`` so that the tools changing its ACL
(``fleetcare certs revoke``, the fleet server) can find it. Before signalling, the pid is checked
to belong to a ``mosquitto`` process (``/proc/<pid>/comm`` where there is a /proc): a stale pid
file must never make us SIGHUP an unrelated process, which would by default terminate it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ReloadOutcome", "reload_broker"]


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """``reloaded`` with the pid signalled, or not, with the reason and what to do instead."""

    reloaded: bool
    pid: int | None
    detail: str


def _process_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return "" if not Path("/proc/self").exists() else None  # no /proc: cannot tell
    except OSError:
        return None


class _NotReloaded(Exception):
    def __init__(self, detail: str, pid: int | None = None) -> None:
        super().__init__(detail)
        self.pid = pid


def _broker_pid(pid_file: Path) -> int:
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise _NotReloaded(f"no pid file {pid_file} (broker not running here?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _NotReloaded(f"cannot read pid file {pid_file} ({exc})") from exc
    if not text.isdigit() or int(text) <= 1:
        raise _NotReloaded(f"pid file {pid_file} does not hold a process id")
    pid = int(text)
    name = _process_name(pid)
    if name is None:
        raise _NotReloaded(f"process {pid} from {pid_file} is not running (stale pid file)", pid)
    if name and name != "mosquitto":
        raise _NotReloaded(f"process {pid} from {pid_file} is {name!r}, not mosquitto (stale pid file)", pid)
    return pid


def reload_broker(pid_file: Path | None) -> ReloadOutcome:
    """Send SIGHUP to the Mosquitto whose pid ``pid_file`` holds. Never raises for a broker
    that is not there: the outcome says why it was not reloaded and what the operator must do."""
    manual = "reload the broker yourself (systemctl reload mosquitto, or kill -HUP <its pid>)"
    try:
        if pid_file is None:
            raise _NotReloaded("no broker pid file configured")
        pid = _broker_pid(pid_file)
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise _NotReloaded(f"process {pid} from {pid_file} is gone", pid) from None
        except PermissionError:
            raise _NotReloaded(f"not allowed to signal mosquitto (pid {pid})", pid) from None
    except _NotReloaded as exc:
        return ReloadOutcome(False, exc.pid, f"{exc}: {manual}")
    return ReloadOutcome(True, pid, f"sent SIGHUP to mosquitto (pid {pid}): it re-reads its CRL and ACL")
