"""Property-based tests of the interval arithmetic and of the reference engine's state accounting,
against brute force on an integer grid (endpoints are whole hours, so the grid is exact)."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from server.kpi import GroupBy, ReportSpec, reference_report
from server.kpi import intervals as iv
from server.kpi.records import CustomerRecord, Dataset, DeviceRecord, IncidentRecord, StateRecord

HOUR = 3600.0
START = datetime(2026, 3, 2, tzinfo=UTC)
T0 = START.timestamp()

points = st.integers(min_value=-20, max_value=120)
raw_intervals = st.lists(st.tuples(points, points), max_size=12)


def covered(intervals: list[tuple[int, int]], lo: int = -1000, hi: int = 1000) -> set[int]:
    return {x for s, e in intervals for x in range(max(s, lo), min(e, hi))}


@given(raw_intervals, points, points)
def test_union_never_exceeds_the_period_and_matches_brute_force(
    intervals: list[tuple[int, int]], a: int, b: int
) -> None:
    lo, hi = min(a, b), max(a, b)
    clipped = [c for c in (iv.clip((float(s), float(e)), lo, hi) for s, e in intervals) if c]
    total = iv.union_length(clipped)
    assert total <= hi - lo
    assert total <= sum(max(0, min(e, hi) - max(s, lo)) for s, e in intervals)
    assert total == len(covered(intervals, lo, hi))
    merged = iv.union(clipped)
    assert all(s < e for s, e in merged)
    assert all(merged[k][1] < merged[k + 1][0] for k in range(len(merged) - 1))  # disjoint, not touching


@given(raw_intervals)
def test_overlapping_intervals_never_double_count(intervals: list[tuple[int, int]]) -> None:
    floats = [(float(s), float(e)) for s, e in intervals]
    once = iv.union_length(floats)
    assert iv.union_length(floats + floats) == once
    assert iv.union_length(floats + [(s + (e - s) / 2, e) for s, e in floats if e > s]) == once
    assert once == len(covered(intervals))


@given(raw_intervals, raw_intervals)
def test_intersect_and_subtract_partition_the_union(
    a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> None:
    fa, fb = [(float(s), float(e)) for s, e in a], [(float(s), float(e)) for s, e in b]
    both, only_a = iv.intersect(fa, fb), iv.subtract(fa, fb)
    assert iv.length(both) == len(covered(a) & covered(b))
    assert iv.length(only_a) == len(covered(a) - covered(b))
    assert iv.length(both) + iv.length(only_a) == iv.union_length(fa)


@given(
    st.lists(st.tuples(points, st.integers(min_value=0, max_value=40) | st.none()), min_size=1, max_size=10)
)
def test_episodes_join_overlaps_and_keep_every_failure(items: list[tuple[int, int | None]]) -> None:
    spans = [(float(s), float("inf") if d is None else float(s + d), k, k) for k, (s, d) in enumerate(items)]
    found = iv.episodes(spans)
    assert sum(e.members for e in found) == len(items)
    assert all(found[k].end <= found[k + 1].start for k in range(len(found) - 1))
    finite = [(s, e) for s, e, _, _ in spans if e != float("inf")]
    if len(finite) == len(spans):
        assert sum(e.end - e.start for e in found) == iv.union_length(finite)


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=2, max_size=40))
def test_percentiles_are_linear_interpolation_between_closest_ranks(values: list[float]) -> None:
    ordered = sorted(values)
    median = iv.percentile(ordered, 1, 2)
    p90 = iv.percentile(ordered, 9, 10)
    assert median is not None
    assert p90 is not None
    assert median == statistics.median(ordered) or abs(median - statistics.median(ordered)) <= 1e-9 * max(
        1.0, median
    )
    deciles = statistics.quantiles(ordered, n=10, method="inclusive")
    assert abs(p90 - deciles[8]) <= 1e-9 * max(1.0, p90)
    assert ordered[0] <= median <= p90 <= ordered[-1]


@given(
    st.lists(st.integers(min_value=0, max_value=50).map(float), max_size=60),
    st.sampled_from([(1, 2), (9, 10), (1, 3), (0, 1), (1, 1)]),
)
def test_selected_percentiles_equal_sorted_ones(values: list[float], fraction: tuple[int, int]) -> None:
    """The report's order statistics by selection (numpy) equal the reference's by sorting,
    repeats (whole seconds) included."""
    selected = iv.array_percentiles(np.array(values, dtype=np.float64), [fraction])
    assert selected == [iv.percentile(sorted(values), *fraction)]


# --- the reference engine's equipment-state accounting against brute force -----------------

STATES = ["running", "degraded", "down", "maintenance", "unknown"]


@st.composite
def device_states(draw: st.DrawFn) -> list[StateRecord]:
    out = []
    for _ in range(draw(st.integers(min_value=0, max_value=10))):
        start = draw(st.integers(min_value=-10, max_value=30))
        length = draw(st.integers(min_value=0, max_value=20) | st.none())  # None: still open
        state = draw(st.sampled_from(STATES))
        planned = (
            draw(st.integers(min_value=-2, max_value=20) | st.none()) if state == "maintenance" else None
        )
        out.append(
            StateRecord(
                "dev",
                state,
                T0 + start * HOUR,
                None if length is None else T0 + (start + length) * HOUR,
                external=draw(st.booleans()),
                planned_end_s=None if planned is None else T0 + (start + planned) * HOUR,
            )
        )
    return out


def brute_force(states: list[StateRecord], hours: int) -> dict[str, int]:
    """Classify every hour of [0, hours) by precedence: down > external > planned > up > unknown."""
    counts = dict.fromkeys(["down", "external", "planned", "up", "unknown"], 0)
    for h in range(hours):
        t = T0 + h * HOUR
        flags = set()
        for s in states:
            end = float("inf") if s.end_s is None else s.end_s
            if not s.start_s <= t < end:
                continue
            if s.state == "down":
                flags.add("external" if s.external else "down")
            elif s.state == "maintenance":
                if s.planned_end_s is not None and t >= s.planned_end_s:
                    flags.add("external" if s.external else "down")
                else:
                    flags.add("planned")
            elif s.state in ("running", "degraded"):
                flags.add("up")
        for name in ("down", "external", "planned", "up"):
            if name in flags:
                counts[name] += 1
                break
        else:
            counts["unknown"] += 1
    return counts


def one_device(states: list[StateRecord], incidents: list[IncidentRecord] | None = None) -> Dataset:
    return Dataset(
        customers=[CustomerRecord(1, "c", None, 100.0)],
        devices=[DeviceRecord("dev", 1, None, "M")],
        states=states,
        incidents=incidents or [],
    )


@settings(max_examples=150, deadline=None)
@given(device_states(), st.integers(min_value=1, max_value=36))
def test_state_accounting_matches_brute_force_with_bounds(states: list[StateRecord], hours: int) -> None:
    """Clipping at both edges, open intervals to the period end, overlaps once, unknown bounds."""
    spec = ReportSpec(START, START + timedelta(hours=hours), as_of=START + timedelta(days=30))
    [row] = reference_report(one_device(states), spec).rows
    v = row.values
    expect = brute_force(states, hours)
    assert v["required_s"] == hours * HOUR
    assert v["downtime_s"] == expect["down"] * HOUR
    assert v["external_downtime_s"] == expect["external"] * HOUR
    assert v["planned_downtime_s"] == expect["planned"] * HOUR
    assert v["operating_s"] == expect["up"] * HOUR
    assert v["unknown_s"] == expect["unknown"] * HOUR
    assert 0 <= v["coverage"] <= 1
    assert 0 <= v["availability_pessimistic"] <= v["availability_optimistic"] <= 1
    if v["availability"] is not None:
        assert v["availability_pessimistic"] <= v["availability"] <= v["availability_optimistic"]
    else:
        assert v["coverage"] == 0


@settings(max_examples=50, deadline=None)
@given(device_states(), st.sampled_from([GroupBy.WEEK, GroupBy.MONTH]))
def test_week_and_month_buckets_add_up_to_the_period(states: list[StateRecord], grain: GroupBy) -> None:
    """[Sat 2026-02-28, Tue 2026-03-03 12:00) crosses a month (Mar 1) and a week (Mon Mar 2)."""
    start, end = START - timedelta(days=2), START + timedelta(hours=36)
    as_of = START + timedelta(days=30)
    whole = reference_report(one_device(states), ReportSpec(start, end, as_of=as_of))
    parts = reference_report(one_device(states), ReportSpec(start, end, group_by=grain, as_of=as_of))
    assert [r.label for r in parts.rows] == (
        ["2026-W09", "2026-W10"] if grain is GroupBy.WEEK else ["2026-02", "2026-03"]
    )
    for name in (
        "required_s",
        "downtime_s",
        "planned_downtime_s",
        "external_downtime_s",
        "operating_s",
        "unknown_s",
    ):
        assert sum(r.values[name] for r in parts.rows) == whole.rows[0].values[name]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=-48, max_value=160),  # real fault time, hours into P
            st.integers(min_value=5, max_value=600),  # detection delay, s
            st.integers(min_value=-7200, max_value=7200),  # device clock skew, s (±2 h)
            st.integers(min_value=0, max_value=30 * 3600) | st.none(),  # repair time, s (None: open)
            st.integers(min_value=0, max_value=7200) | st.none(),  # ack delay
        ),
        max_size=12,
    )
)
def test_no_negative_durations_under_clock_skew(
    raw: list[tuple[int, int, int, int | None, int | None]],
) -> None:
    incidents = []
    for k, (at, delay, skew, repair, ack) in enumerate(raw):
        real = T0 + at * HOUR
        detect = real + delay
        restored = None if repair is None else real + repair + skew  # device time, same skew
        incidents.append(
            IncidentRecord(
                id=k + 1,
                device_id="dev",
                fault_code="E1",
                fault_s=real + skew,  # device time: after t_detect when the clock is fast
                detect_s=detect,
                ack_s=None if ack is None else detect + ack,
                restored_s=restored,
                resolved_s=None if restored is None else max(restored, detect) + 60,
                channel=None if restored is None else "field",
                visits=1,
            )
        )
    spec = ReportSpec(START, START + timedelta(days=7), as_of=START + timedelta(days=60))
    [row] = reference_report(one_device([], incidents), spec).rows
    v = row.values
    for prefix in ("mtrs", "mtta", "mttrespond", "mttresolve", "open_age"):
        for stat in ("mean", "median", "p90"):
            value = v[f"{prefix}_{stat}_s"]
            assert value is None or value >= 0, (prefix, stat, value)
    assert 0 <= v["failure_episodes"] <= v["failures"]  # an episode starting in P starts with a failure in P
    assert 0 <= v["repeat_failures"] <= v["failures"]
    assert v["mtbf_censored"] == (v["failure_episodes"] == 0)
