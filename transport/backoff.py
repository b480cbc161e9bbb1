"""Full-jitter exponential backoff (AWS Architecture Blog, "Exponential Backoff and Jitter").

The n-th delay is uniform in ``[0, min(cap, initial * 2**n)]``: many devices that lost the same
broker at the same moment spread their reconnects instead of arriving together.
"""

from __future__ import annotations

import random

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(attempt: int, initial: float, cap: float, *, rng: random.Random | None = None) -> float:
    """The delay before retry number ``attempt`` (0 first): uniform in
    ``[0, min(cap, initial * 2**attempt)]``."""
    # min() before the power would overflow for large attempt counts
    ceiling = cap if attempt >= 64 else min(cap, initial * 2.0**attempt)
    return (rng or _RNG).uniform(0, ceiling)


_RNG = random.Random()  # noqa: S311 - jitter, not cryptography


class Backoff:
    """:func:`backoff_delay` with its attempt counter: ``next_delay`` after each failure,
    ``reset`` after a success."""

    def __init__(self, initial: float, cap: float, *, rng: random.Random | None = None) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError(f"need 0 < initial <= cap, got initial={initial} cap={cap}")
        self.initial = initial
        self.cap = cap
        self.attempts = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def ceiling(self) -> float:
        """Upper bound of the next delay."""
        # min() before the power would overflow for large attempt counts
        if self.attempts >= 64:
            return self.cap
        return min(self.cap, self.initial * 2.0**self.attempts)

    def next_delay(self) -> float:
        delay = self._rng.uniform(0, self.ceiling())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
