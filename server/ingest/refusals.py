"""Which devices ingest refuses: revoked (``devices.revoked_at``) or retired (``decommissioned_at``).

The broker should already have stopped them (docs/security.md), but the server does its own
check, so a device the broker still lets through (an ACL not yet reloaded, a missed CRL) gets
nothing stored. On the hot path this is one dictionary lookup per message: the refused ids are
few, read whole from the database at most every ``max_age`` seconds (1 s by default, so a
revocation takes effect within about a second plus one batch), when a batch needs them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.exc import SQLAlchemyError

from server.ingest.log_throttle import LogThrottle

__all__ = ["DEFAULT_MAX_AGE", "RefusedDevices"]

DEFAULT_MAX_AGE = 1.0
"""Seconds a list of refused devices is used before it is read again."""

logger = logging.getLogger(__name__)


class RefusedDevices:
    """A cache of ``device id → reason`` (``revoked`` or ``retired``) and a log-flood guard."""

    def __init__(
        self,
        load: Callable[[], Awaitable[dict[str, str]]],
        *,
        max_age: float = DEFAULT_MAX_AGE,
        log_interval: float = 60.0,
    ) -> None:
        self._load = load
        self.max_age = max_age
        self.log_interval = log_interval
        self._refused: dict[str, str] = {}
        self._loaded_at: float | None = None
        self._log = LogThrottle(log_interval)

    async def current(self) -> Mapping[str, str]:
        """The refused devices, re-read when the cached list is older than ``max_age``. If the
        database cannot be read, the last list is kept (and the batch's own write will wait
        for the database anyway)."""
        now = time.monotonic()
        if self._loaded_at is None or now - self._loaded_at >= self.max_age:
            try:
                self._refused = await self._load()
            except (SQLAlchemyError, OSError) as exc:
                logger.warning("cannot read the refused devices (%s); using the last list", exc)
            self._loaded_at = now
        return self._refused

    def should_log(self, device_id: str) -> bool:
        """True at most once per ``log_interval`` per device: a refused device that keeps
        publishing must not flood the log."""
        return self._log.allow(device_id) is not None
