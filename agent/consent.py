"""Local consent to remote sessions: the technician asks, a person at the device decides.

A ``session.consent`` command records a *pending* request for its session
(:meth:`ConsentStore.request`); a local operator answers with ``fleetcare agent consent
approve|deny`` (another process, same SQLite file ``data_dir/agent.sqlite3``) or, in simulators
and tests, through ``runtime.consent``. An approval lasts until min(now + the operator's
``--for``, the request's ``until``, now + ``policy.max_consent_minutes``). A denial is final for
that session.

Every decision has a number (``decision``: 1, 2, … per session) so the runtime can announce it
(``consent.granted`` / ``consent.denied``) exactly once: the event is queued in the outbox
together with a once-key ``consent:<session>:<decision>`` in the same transaction
(:meth:`agent.outbox.Outbox.append`), and the store only marks it announced afterwards, so
neither a crash nor a restart can send it twice or lose it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent.errors import ConsentError
from agent.storage import JournalMode, connect

__all__ = [
    "DEFAULT_APPROVAL",
    "ConsentRecord",
    "ConsentState",
    "ConsentStatus",
    "ConsentStore",
    "parse_duration",
]

DEFAULT_APPROVAL = timedelta(minutes=60)

SCHEMA = """
CREATE TABLE IF NOT EXISTS consent (
    session_id TEXT PRIMARY KEY,
    technician TEXT NOT NULL,
    reason TEXT NOT NULL,
    until REAL NOT NULL,
    all_commands INTEGER NOT NULL,
    issuer TEXT NOT NULL,
    command_id TEXT NOT NULL,
    requested_at REAL NOT NULL,
    state TEXT NOT NULL,
    decision INTEGER NOT NULL DEFAULT 0,
    decided_by TEXT,
    decided_at REAL,
    expires_at REAL,
    deny_reason TEXT,
    announced INTEGER NOT NULL DEFAULT 0
);
"""


class ConsentState(StrEnum):
    """What is stored: the last thing that happened to a session's request."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


class ConsentStatus(StrEnum):
    """What the guard sees at one instant."""

    NONE = "none"  # never requested
    PENDING = "pending"
    APPROVED = "approved"
    EXPIRED = "expired"
    DENIED = "denied"


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    session_id: str
    technician: str
    reason: str
    until: datetime
    all_commands: bool
    issuer: str
    command_id: str
    requested_at: datetime
    state: ConsentState
    decision: int
    decided_by: str | None
    decided_at: datetime | None
    expires_at: datetime | None
    deny_reason: str | None
    announced: bool

    def status(self, now: datetime) -> ConsentStatus:
        if self.state is ConsentState.DENIED:
            return ConsentStatus.DENIED
        if self.state is ConsentState.PENDING:
            return ConsentStatus.PENDING
        assert self.expires_at is not None
        return ConsentStatus.APPROVED if now < self.expires_at else ConsentStatus.EXPIRED


_COLUMNS = (
    "session_id, technician, reason, until, all_commands, issuer, command_id, requested_at, "
    "state, decision, decided_by, decided_at, expires_at, deny_reason, announced"
)


def _record(row: tuple[Any, ...]) -> ConsentRecord:
    (sid, tech, reason, until, all_cmds, issuer, cid, req, state, dec, by, at, exp, deny, ann) = row
    return ConsentRecord(
        session_id=sid,
        technician=tech,
        reason=reason,
        until=datetime.fromtimestamp(until, UTC),
        all_commands=bool(all_cmds),
        issuer=issuer,
        command_id=cid,
        requested_at=datetime.fromtimestamp(req, UTC),
        state=ConsentState(state),
        decision=int(dec),
        decided_by=by,
        decided_at=_ts(at),
        expires_at=_ts(exp),
        deny_reason=deny,
        announced=bool(ann),
    )


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``90s``, ``1h30m`` or plain minutes (``45``) → timedelta; ValueError."""
    text = text.strip().lower()
    if text.isdigit():
        return timedelta(minutes=int(text))
    total, number = 0, ""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    for char in text:
        if char.isdigit():
            number += char
        elif char in units and number:
            total += int(number) * units[char]
            number = ""
        else:
            raise ValueError(f"{text!r} is not a duration: use e.g. 30m, 2h, 1h30m")
    if number or total <= 0:
        raise ValueError(f"{text!r} is not a positive duration: use e.g. 30m, 2h, 1h30m")
    return timedelta(seconds=total)


class ConsentStore:
    """The ``consent`` table of ``data_dir/agent.sqlite3``, shared by the agent and the local
    operator's CLI (another process). Short transactions. The runtime passes its shared
    connection (``db=``); the CLI passes a path and leaves the file's journal mode alone
    (``journal=None``) so it never switches the agent's database between WAL and rollback."""

    def __init__(
        self,
        path: Path,
        *,
        now: Callable[[], datetime],
        max_approval: timedelta = timedelta(minutes=480),
        db: sqlite3.Connection | None = None,
        journal: JournalMode | None = "wal",
        on_decided: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._now = now
        self.max_approval = max_approval
        # An in-process decision (runtime.consent) wakes the runtime at once; only decisions
        # of another process (the CLI) wait for its next look (consent_poll_interval).
        self._on_decided = on_decided
        self._owns_db = db is None
        try:
            self._db = db if db is not None else connect(self.path, journal=journal)
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise ConsentError(f"cannot open the consent database {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the connection if the store opened it (a shared one belongs to the runtime)."""
        if self._owns_db:
            self._db.close()

    # -- reading -----------------------------------------------------------------------------

    def _select(self, where: str, params: tuple[object, ...] = ()) -> list[ConsentRecord]:
        """``where`` is one of this module's constant clauses; values go through ``params``."""
        query = f"SELECT {_COLUMNS} FROM consent {where}"  # noqa: S608 - constant clauses only
        try:
            rows = self._db.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise ConsentError(f"cannot read the consent database {self.path}: {exc}") from exc
        return [_record(row) for row in rows]

    def get(self, session_id: str) -> ConsentRecord | None:
        found = self._select("WHERE session_id = ?", (session_id,))
        return found[0] if found else None

    def status(self, session_id: str, now: datetime | None = None) -> ConsentStatus:
        record = self.get(session_id)
        if record is None:
            return ConsentStatus.NONE
        return record.status(now or self._now())

    def records(self, *, state: ConsentState | None = None) -> list[ConsentRecord]:
        if state is None:
            return self._select("ORDER BY requested_at")
        return self._select("WHERE state = ? ORDER BY requested_at", (state.value,))

    def pending(self) -> list[ConsentRecord]:
        """Requests waiting for a local operator (their ``until`` not yet passed)."""
        now = self._now()
        return [r for r in self.records(state=ConsentState.PENDING) if r.until > now]

    def unannounced(self) -> list[ConsentRecord]:
        """Decisions the runtime has not yet turned into a consent.granted/denied event."""
        return self._select("WHERE state != 'pending' AND announced = 0 ORDER BY decided_at")

    # -- writing -----------------------------------------------------------------------------

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        try:
            return self._db.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise ConsentError(f"cannot write the consent database {self.path}: {exc}") from exc

    def request(
        self,
        session_id: str,
        *,
        technician: str,
        reason: str,
        until: datetime,
        all_commands: bool,
        issuer: str,
        command_id: str,
    ) -> ConsentRecord:
        """Record (or renew) a request. Returns the stored record: a denied session stays
        denied; an approved one stays approved while unexpired, else asks again."""
        now = self._now()
        existing = self.get(session_id)
        if existing is not None:
            status = existing.status(now)
            if status in (ConsentStatus.DENIED, ConsentStatus.APPROVED):
                return existing
        fields = (
            technician,
            reason,
            until.timestamp(),
            int(all_commands),
            issuer,
            command_id,
            now.timestamp(),
        )
        if existing is None:
            self._write(
                "INSERT INTO consent (technician, reason, until, all_commands, issuer, command_id, "
                "requested_at, session_id, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                (*fields, session_id),
            )
        else:
            self._write(
                "UPDATE consent SET technician = ?, reason = ?, until = ?, all_commands = ?, issuer = ?, "
                "command_id = ?, requested_at = ?, state = 'pending', expires_at = NULL "
                "WHERE session_id = ?",
                (*fields, session_id),
            )
        record = self.get(session_id)
        assert record is not None
        return record

    def _decidable(self, session_id: str) -> ConsentRecord:
        record = self.get(session_id)
        if record is None:
            raise ConsentError(
                f"no consent request for session {session_id!r}: see 'fleetcare agent consent list'"
            )
        if record.state is ConsentState.DENIED:
            raise ConsentError(
                f"session {session_id!r} was denied by {record.decided_by} and a denial is final; "
                "the technician must open a new session"
            )
        return record

    def approve(self, session_id: str, by: str, ttl: timedelta = DEFAULT_APPROVAL) -> ConsentRecord:
        """Approve a request for min(``ttl``, the request's ``until``, ``max_approval``)."""
        if ttl <= timedelta(0):
            raise ConsentError(f"an approval must last a positive time, not {ttl}")
        record = self._decidable(session_id)
        now = self._now()
        if record.until <= now:
            raise ConsentError(
                f"the request for session {session_id!r} lapsed at {record.until:%Y-%m-%d %H:%M}Z; "
                "the technician must ask again"
            )
        expires = min(now + ttl, record.until, now + self.max_approval)
        self._write(
            "UPDATE consent SET state = 'approved', decision = decision + 1, decided_by = ?, "
            "decided_at = ?, expires_at = ?, deny_reason = NULL, announced = 0 "
            "WHERE session_id = ? AND state != 'denied'",
            (by, now.timestamp(), expires.timestamp(), session_id),
        )
        return self._after(session_id)

    def deny(self, session_id: str, by: str, reason: str = "") -> ConsentRecord:
        """Deny a session, for good."""
        self._decidable(session_id)
        now = self._now()
        self._write(
            "UPDATE consent SET state = 'denied', decision = decision + 1, decided_by = ?, "
            "decided_at = ?, expires_at = NULL, deny_reason = ?, announced = 0 "
            "WHERE session_id = ? AND state != 'denied'",
            (by, now.timestamp(), reason, session_id),
        )
        return self._after(session_id)

    def _after(self, session_id: str) -> ConsentRecord:
        if self._on_decided is not None:
            self._on_decided()
        record = self.get(session_id)
        assert record is not None
        return record

    def mark_announced(self, session_id: str, decision: int) -> None:
        self._write(
            "UPDATE consent SET announced = 1 WHERE session_id = ? AND decision = ?", (session_id, decision)
        )
