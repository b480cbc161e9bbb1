from __future__ import annotations

import random

import pytest

from transport.backoff import Backoff


def test_backoff_is_full_jitter_under_a_doubling_ceiling() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(7))
    ceilings = []
    for _ in range(10):
        ceiling = backoff.ceiling()
        ceilings.append(ceiling)
        delay = backoff.next_delay()
        assert 0 <= delay <= ceiling
    assert ceilings == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]


def test_backoff_delays_spread_over_the_whole_range() -> None:
    backoff = Backoff(1.0, 8.0, rng=random.Random(1))
    backoff.attempts = 10
    delays = [backoff.next_delay() for _ in range(2000)]
    assert max(delays) <= 8.0
    assert min(delays) < 0.5  # full jitter reaches close to zero ...
    assert max(delays) > 7.5  # ... and close to the cap


def test_backoff_is_capped_even_after_very_many_attempts() -> None:
    backoff = Backoff(0.5, 30.0)
    backoff.attempts = 10_000
    assert backoff.ceiling() == 30.0
    assert backoff.next_delay() <= 30.0


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(1.0, 60.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.ceiling() == 1.0


def test_backoff_refuses_nonsense_bounds() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(10.0, 1.0)


def test_backoff_delay_is_full_jitter_under_the_capped_ceiling() -> None:
    import random  # noqa: PLC0415

    from transport.backoff import backoff_delay  # noqa: PLC0415

    rng = random.Random(7)
    delays = [backoff_delay(3, 0.05, 10.0, rng=rng) for _ in range(1000)]
    assert min(delays) >= 0
    assert max(delays) <= 0.4
    assert max(delays) > 0.3  # uniform over the whole range, not clustered at the bottom
    assert backoff_delay(10_000, 0.05, 2.0, rng=rng) <= 2.0  # no overflow for huge attempts
