"""Interval arithmetic on half-open intervals ``[start, end)`` of epoch seconds.

Pure and exact (no rounding beyond IEEE addition): the reference engine and the property
tests build on it. An interval with ``end <= start`` is empty and contributes nothing; time
is never summed over overlapping intervals, always taken as a union.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "Episode",
    "Interval",
    "clip",
    "episodes",
    "interpolate",
    "intersect",
    "length",
    "percentile",
    "subtract",
    "union",
    "union_length",
]

Interval = tuple[float, float]
T = TypeVar("T")


def length(intervals: Iterable[Interval]) -> float:
    """Sum of the lengths of already disjoint intervals (empty ones count 0)."""
    return sum(max(0.0, end - start) for start, end in intervals)


def clip(interval: Interval, lo: float, hi: float) -> Interval | None:
    """``interval ∩ [lo, hi)``, or None when that is empty."""
    start, end = max(interval[0], lo), min(interval[1], hi)
    return (start, end) if end > start else None


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """The union as sorted, disjoint, non-empty intervals (touching ones merged)."""
    merged: list[Interval] = []
    for start, end in sorted(iv for iv in intervals if iv[1] > iv[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def union_length(intervals: Iterable[Interval]) -> float:
    return length(union(intervals))


def intersect(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """``union(a) ∩ union(b)`` as sorted, disjoint, non-empty intervals."""
    left, right = union(a), union(b)
    out: list[Interval] = []
    i = j = 0
    while i < len(left) and j < len(right):
        start, end = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        if end > start:
            out.append((start, end))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """``union(a) - union(b)`` as sorted, disjoint, non-empty intervals."""
    out: list[Interval] = []
    cut = union(b)
    for start, end in union(a):
        cursor = start
        for c_start, c_end in cut:
            if c_end <= cursor or c_start >= end:
                continue
            if c_start > cursor:
                out.append((cursor, c_start))
            cursor = max(cursor, c_end)
            if cursor >= end:
                break
        if cursor < end:
            out.append((cursor, end))
    return out


@dataclass(frozen=True, slots=True)
class Episode(Generic[T]):
    """Overlapping intervals joined: ``first`` is the payload of the interval that opened it."""

    start: float
    end: float
    first: T
    members: int


def episodes(items: Sequence[tuple[float, float, int, T]]) -> list[Episode[T]]:
    """Join ``(start, end, tie_break, payload)`` intervals that overlap into episodes.

    Ordered by start, then longest first, then ``tie_break``; an interval starts a new
    episode when it starts at or after the end of everything before it (half-open: one that
    starts exactly when the previous ended is a new episode).
    """
    out: list[Episode[T]] = []
    reach = -float("inf")
    for start, raw_end, _tie, payload in sorted(items, key=lambda it: (it[0], -it[1], it[2])):
        end = max(raw_end, start)
        if not out or start >= reach:
            out.append(Episode(start, end, payload, 1))
            reach = end
        else:
            last = out[-1]
            reach = max(reach, end)
            out[-1] = Episode(last.start, reach, last.first, last.members + 1)
    return out


def percentile(sorted_values: Sequence[float], numerator: int, denominator: int) -> float | None:
    """Linear interpolation between closest ranks (numpy's default, Excel's PERCENTILE.INC):
    rank h = (n - 1)·p, 0-based, with p = numerator/denominator kept exact in integers."""
    n = len(sorted_values)
    if n == 0:
        return None
    lo, rem = divmod((n - 1) * numerator, denominator)
    if rem == 0:
        return sorted_values[lo]
    return interpolate(sorted_values[lo], sorted_values[lo + 1], rem, denominator)


def array_percentiles(
    values: npt.NDArray[np.float64], fractions: Sequence[tuple[int, int]]
) -> list[float | None]:
    """:func:`percentile` of ``values`` (any order) at each fraction: the order statistics by
    selection (numpy's partition, linear time) — the same numbers as sorting."""
    n = len(values)
    if n == 0:
        return [None for _ in fractions]
    ranks = sorted({r for num, den in fractions for r in _ranks(n, num, den)})
    part = np.partition(values, ranks)
    wanted = {rank: float(part[rank]) for rank in ranks}
    out: list[float | None] = []
    for num, den in fractions:
        lo, rem = divmod((n - 1) * num, den)
        out.append(wanted[lo] if rem == 0 else interpolate(wanted[lo], wanted[lo + 1], rem, den))
    return out


def multiset_difference(
    values: npt.NDArray[np.float64], removed: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``values`` less one occurrence of each of ``removed`` (which it holds: the same values,
    computed the same way); the order of what is left does not matter."""
    if len(removed) == 0:
        return values
    kept, counts = np.unique(values, return_counts=True)
    gone, gone_counts = np.unique(removed, return_counts=True)
    at = np.searchsorted(kept, gone)
    if np.any(at >= len(kept)) or np.any(kept[np.minimum(at, len(kept) - 1)] != gone):
        raise ValueError("a removed value is not among the values")
    counts[at] -= gone_counts
    if np.any(counts < 0):
        raise ValueError("more of a value removed than there are")
    return np.repeat(kept, counts)


def _ranks(n: int, numerator: int, denominator: int) -> tuple[int, ...]:
    lo, rem = divmod((n - 1) * numerator, denominator)
    return (lo,) if rem == 0 else (lo, lo + 1)


def interpolate(low: float, high: float, rem: int, denominator: int) -> float:
    """``low + (rem/denominator)·(high - low)``: the one interpolation both engines use."""
    return low + (high - low) * rem / denominator
