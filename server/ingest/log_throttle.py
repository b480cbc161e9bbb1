"""At most one log line per key (a device) per interval, with a count of what was held back.

Why: one device sending 10,000 malformed or refused messages must not bury every other line of
the server's log (nor fill its disk); counters (``GET /api/v1/ingest/stats``) keep the exact
numbers, the log keeps one line a minute per device saying how many it did not print.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["LogThrottle"]


class LogThrottle:
    def __init__(
        self, interval: float = 60.0, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None: do not log this one (it is counted). Otherwise log it, and the number returned
        is how many were held back since the key's previous line (0 the first time)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) >= self.max_keys:  # forget keys not logged for a while
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
            self._held = {k: n for k, n in self._held.items() if k in self._last}
        self._last[key] = now
        return self._held.pop(key, 0)
