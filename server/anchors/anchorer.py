"""The server task that anchors the audit chain's head (:mod:`server.anchors.anchor`):
after a seal advanced the head (at most one anchor every ``auth.audit_anchor_min_gap`` s) and at
least every ``auth.audit_anchor_interval`` s. Each round has a timeout, the file write runs in a
daemon thread (a stalled disk can neither block the event loop nor the server's exit), and
failures are logged and counted, never raised into the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from server.anchors.anchor import (
    LOG_MARKER,
    UNCHECKED,
    Anchor,
    anchor_file,
    append_anchor,
    last_anchor,
    load_anchor_key,
    sign_anchor,
)
from server.base import audit
from server.periodic import Periodic
from server.settings import ServerSettings

__all__ = ["AnchorStats", "AuditAnchorer", "run_sealer", "sealer_job"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class AnchorStats:
    written: int = 0  # anchors appended to the file
    failed: int = 0  # rounds that failed (database, file, timeout)
    tamper_alerts: int = 0  # times the chain no longer held the last anchored head
    last: Anchor | None = None  # the newest anchor written (or found in the file at start)
    last_error: str | None = None


def _in_daemon_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``work`` in a daemon thread: unlike the default executor's threads, it holds up
    neither the event loop's nor the interpreter's shutdown when the disk under it stalls."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        outcome: Callable[[], None]
        try:
            outcome = functools.partial(future.set_result, work())
        except Exception as exc:  # handed over to the awaiting task
            outcome = functools.partial(future.set_exception, exc)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name="server.audit.anchor-io", daemon=True).start()
    future.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved
    return future


class AuditAnchorer:
    """Anchors the chain head (see the module docstring); ``run()`` until cancelled."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        path: Path,
        key: Ed25519PrivateKey,
        server: str,
        interval: float,
        min_gap: float,
        timeout: float,
    ) -> None:
        self.path = path
        self.stats = AnchorStats()
        self._keys = {protocol.key_id(key.public_key()): key.public_key()}
        self._sessions = sessions
        self._key = key
        self._server = server
        self._interval = interval
        self._min_gap = min_gap
        self._timeout = timeout
        self._wake = asyncio.Event()
        self._written_at = float("-inf")  # loop time of the last anchor written
        self._writing: asyncio.Future[None] | None = None
        self._alerted: Anchor | None = None

    @classmethod
    def from_settings(
        cls, settings: ServerSettings, sessions: async_sessionmaker[AsyncSession]
    ) -> AuditAnchorer | None:
        """The anchorer the settings ask for; None, with a warning, without a file or a key."""
        path, key = anchor_file(settings), load_anchor_key(settings)
        if path is None or key is None:
            missing = (
                "auth.audit_anchor_file" if path is None else "signing_key_file or auth.audit_anchor_key_file"
            )
            logger.warning("audit: the chain head is not anchored (set %s): %s", missing, UNCHECKED)
            return None
        return cls(
            sessions,
            path=path,
            key=key,
            server=f"{settings.mqtt.client_id}@{socket.gethostname()}",
            interval=settings.auth.audit_anchor_interval,
            min_gap=settings.auth.audit_anchor_min_gap,
            timeout=settings.auth.audit_anchor_timeout,
        )

    def notify(self) -> None:
        """The head advanced (the sealer calls this): anchor it soon, within the rate limit."""
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await self._resume()
        while True:
            await self.anchor_once()
            with contextlib.suppress(TimeoutError):  # the periodic check: e.g. another process sealed
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            pause = self._min_gap - (loop.time() - self._written_at)
            if pause > 0:
                await asyncio.sleep(pause)  # the rate limit

    async def _resume(self) -> None:
        """Continue the file: its last anchor is the head the chain must still contain."""
        try:
            async with asyncio.timeout(self._timeout):
                self.stats.last = await _in_daemon_thread(lambda: last_anchor(self.path, self._keys))
        except (OSError, TimeoutError) as exc:
            logger.warning("audit: cannot read the last anchor of %s: %s", self.path, str(exc) or "timed out")
        if self.stats.last is not None:
            logger.info("audit: continuing %s after anchor #%d", self.path, self.stats.last.chain_seq)

    async def anchor_once(self) -> Anchor | None:
        """One round: the anchor written, or None (the head has not moved, or the round failed)."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._round()
        except TimeoutError:
            self._fail(f"timed out after {self._timeout:g}s")
        except (SQLAlchemyError, OSError) as exc:
            self._fail(str(exc))
        except Exception as exc:  # a bug here must not stop the server (its TaskGroup)
            logger.exception("audit: anchoring failed unexpectedly")
            self._fail(repr(exc))
        return None

    def _fail(self, reason: str) -> None:
        self.stats.failed += 1
        self.stats.last_error = reason
        logger.warning("audit: anchoring to %s failed (%d so far): %s", self.path, self.stats.failed, reason)

    async def _round(self) -> Anchor | None:
        last = self.stats.last
        async with self._sessions() as session:
            current = await audit.head(session)
            stored = await audit.hash_at(session, last.chain_seq) if last is not None else None
        if last is not None:
            if current == (last.chain_seq, last.hash):
                return None
            if stored != last.hash:
                self._alert(last, current)
        if current.chain_seq == 0:
            return None
        if self._writing is not None and not self._writing.done():
            raise OSError(f"the previous write to {self.path} has not finished (a stalled disk?)")
        anchor = sign_anchor(self._key, current, server=self._server)
        logger.info("%s %s", LOG_MARKER, anchor.line())  # first: the log has it even if the file fails
        self._writing = _in_daemon_thread(lambda: append_anchor(self.path, anchor))
        await asyncio.shield(self._writing)  # a timeout leaves the write running, and known
        self._written_at = asyncio.get_running_loop().time()
        self.stats.written += 1
        self.stats.last = anchor
        return anchor

    def _alert(self, last: Anchor, current: audit.ChainHead) -> None:
        """The chain no longer holds the last anchored head: an error, once per anchor. Anchoring
        goes on (new entries are worth anchoring); verify still compares every older anchor."""
        if self._alerted == last:
            return
        self._alerted = last
        self.stats.tamper_alerts += 1
        what = (
            f"it ends at #{current.chain_seq}: entries removed"
            if current.chain_seq < last.chain_seq
            else f"entry #{last.chain_seq} has another hash: rewritten"
        )
        logger.error(
            "audit: the chain no longer holds the head anchored at %s (#%d, %s): %s; "
            "run 'fleetcare server audit verify'",
            last.at.isoformat(),
            last.chain_seq,
            last.hash,
            what,
        )


# --- the sealer: chains new entries; each round that advanced the head wakes the anchorer -------


def sealer_job(
    sessions: async_sessionmaker[AsyncSession],
    interval: float,
    *,
    on_sealed: Callable[[], None] | None = None,
) -> Periodic:
    """Seal new entries every ``interval`` seconds; a failed round is logged and retried at the
    next one (unsealed entries simply wait). ``on_sealed`` is called after every round that
    advanced the head (the anchorer anchors it soon after)."""

    async def seal_round(_now: datetime | None) -> int:
        async with sessions() as session:
            count = await audit.seal(session)
        if count:
            logger.debug("audit: sealed %d entries", count)
            if on_sealed is not None:
                on_sealed()
        return count

    return Periodic("server.audit.sealer", interval, seal_round)


async def run_sealer(
    sessions: async_sessionmaker[AsyncSession],
    interval: float,
    *,
    on_sealed: Callable[[], None] | None = None,
) -> None:
    """:func:`sealer_job`, run until cancelled."""
    await sealer_job(sessions, interval, on_sealed=on_sealed).run()
