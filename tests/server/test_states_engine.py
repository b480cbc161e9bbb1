"""The pure state/episode derivation (server.incidents.engine): no database, exact times."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from server.incidents.engine import (
    Clock,
    EngineConfig,
    EngineState,
    Fold,
    Item,
    ItemKind,
    NeedsRebuild,
    attach_gaps,
    place,
    position_key,
)

CONFIG = EngineConfig(debounce=60, grace=300, flap_window=300, skew_tolerance=5)
T0 = 1_800_000_000.0


class History:
    """Items of one device; ``at`` is seconds after T0 on both clocks unless told otherwise."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self._seq = itertools.count(1)

    def add(self, kind: ItemKind, at: float, *, received: float | None = None, **fields: object) -> Item:
        item = Item(
            seq=next(self._seq),
            ts=T0 + at,
            received=T0 + (at if received is None else received),
            kind=kind,
            **fields,  # type: ignore[arg-type]
        )
        self.items.append(item)
        return item

    def raised(self, at: float, code: str = "E1", effect: str = "down", **kw: object) -> Item:
        return self.add(ItemKind.RAISED, at, code=code, effect=effect, severity="error", **kw)

    def cleared(self, at: float, code: str = "E1", **kw: object) -> Item:
        return self.add(ItemKind.CLEARED, at, code=code, **kw)


def rebuild(items: Sequence[Item], now: float, config: EngineConfig = CONFIG) -> Fold:
    ordered = sorted(items, key=lambda i: (i.received, i.seq))
    for item in ordered:
        item.gap_end = item.gap_restart = None
    place(ordered, Clock(), config.skew_tolerance)
    attach_gaps(ordered)
    fold = Fold(config, full=True)
    for item in sorted(ordered, key=position_key):
        fold.feed(item)
    fold.advance(T0 + now)
    return fold


def states(fold: Fold) -> list[tuple[str, float, float | None]]:
    return [
        (s.state, s.start - T0, None if s.end is None else s.end - T0)
        for s in fold.segments
        if s.end is None or s.end > s.start
    ]


def test_a_fault_outlasting_the_debounce_is_an_episode_with_detect_after_the_window() -> None:
    h = History()
    h.add(ItemKind.ONLINE, 0, state="running")
    h.raised(100)
    h.cleared(400)
    fold = rebuild(h.items, 500)
    assert states(fold) == [("running", 0, 100), ("down", 100, 400), ("running", 400, None)]
    (episode,) = fold.episodes
    assert (episode.start - T0, episode.detect - T0, episode.end - T0) == (100, 160, 400)  # type: ignore[operator]
    assert episode.codes == ["E1"]
    assert episode.effect == "down"


def test_a_fault_clearing_within_the_debounce_is_transient() -> None:
    h = History()
    h.raised(100)
    h.cleared(130)
    fold = rebuild(h.items, 500)
    (episode,) = fold.episodes
    assert episode.transient
    assert episode.faults == [["E1", T0 + 100, T0 + 130]]


def test_overlapping_faults_are_one_episode_and_downtime_is_their_union() -> None:
    h = History()
    h.raised(100, "A")
    h.raised(150, "B", effect="degraded")
    h.cleared(200, "A")
    h.cleared(260, "B")
    fold = rebuild(h.items, 500)
    assert states(fold) == [("down", 100, 200), ("degraded", 200, 260), ("running", 260, None)]
    (episode,) = fold.episodes
    assert episode.codes == ["A", "B"]
    assert (episode.start - T0, episode.end - T0) == (100, 260)  # type: ignore[operator]


def test_an_ongoing_episode_is_promoted_when_the_window_passes() -> None:
    h = History()
    h.raised(100)
    assert rebuild(h.items, 150).episodes[0].detect is None
    assert rebuild(h.items, 161).episodes[0].detect == T0 + 160


def test_reported_running_ends_faults_the_device_never_cleared() -> None:
    h = History()
    h.raised(100)
    h.add(ItemKind.STATE, 400, state="running")
    fold = rebuild(h.items, 500)
    assert states(fold) == [("down", 100, 400), ("running", 400, None)]


def test_maintenance_past_its_planned_end_is_down() -> None:
    h = History()
    h.add(ItemKind.MAINT_START, 100, planned_end=T0 + 200)
    h.add(ItemKind.MAINT_END, 500)
    fold = rebuild(h.items, 600)
    assert states(fold) == [("maintenance", 100, 200), ("down", 200, 500), ("running", 500, None)]
    assert fold.segments[0].planned_end == T0 + 200
    (episode,) = fold.episodes
    assert episode.codes == []
    assert "planned end" in episode.detail


def test_clock_two_hours_ahead_or_behind_is_corrected() -> None:
    for skew in (7200.0, -7200.0):
        h = History()
        h.add(ItemKind.ONLINE, 0 + skew, received=0.2, state="running")
        h.raised(100 + skew, received=100.1)
        h.cleared(400 + skew, received=400.1)
        fold = rebuild(h.items, 500)
        (episode,) = fold.episodes
        assert episode.start == pytest.approx(T0 + 100, abs=0.5)
        assert episode.start <= episode.detect <= episode.end_received  # type: ignore[operator]


def test_continuation_refuses_late_items() -> None:
    h = History()
    h.raised(100)
    fold = rebuild(h.items, 120)
    late = h.cleared(90)
    late.position = late.ts
    with pytest.raises(NeedsRebuild):
        Fold(CONFIG, EngineState.from_json(fold.state.to_json()), full=False).feed(late)


def test_offline_past_grace_is_unknown_from_the_offline_moment_and_an_offline_episode() -> None:
    h = History()
    h.add(ItemKind.ONLINE, 0, state="running")
    h.add(ItemKind.OFFLINE, 1000)
    short = rebuild(h.items, 1200)
    assert states(short) == [("running", 0, None)]
    fold = rebuild(h.items, 1400)
    assert states(fold) == [("running", 0, 1000), ("unknown", 1000, None)]
    (offline,) = fold.episodes
    assert (offline.kind, offline.start - T0, offline.detect - T0) == ("offline", 1000, 1300)  # type: ignore[operator]


def test_back_after_a_network_loss_the_buffered_history_fills_the_gap() -> None:
    h = History()
    h.add(ItemKind.ONLINE, 0, state="running")
    h.add(ItemKind.OFFLINE, 1000)
    h.raised(1500, received=4000)  # buffered by the agent while the link was down
    h.add(ItemKind.ONLINE, 3990, received=4000.5, state="down")
    fold = rebuild(h.items, 4100)
    assert states(fold) == [("running", 0, 1500), ("down", 1500, None)]
    fault, offline = sorted(fold.episodes, key=lambda e: e.kind)
    assert fault.kind == "fault"
    assert fault.start == T0 + 1500
    assert offline.returned == T0 + 4000  # awaiting the flap window
    fold = rebuild(h.items, 4400)
    offline = next(e for e in fold.episodes if e.kind == "offline")
    assert (offline.end, offline.external) == (T0 + 4000, True)


def test_after_a_restart_the_time_the_agent_was_not_running_stays_unknown() -> None:
    h = History()
    h.add(ItemKind.ONLINE, 0, state="running")
    h.add(ItemKind.OFFLINE, 1000)
    h.add(ItemKind.STARTED, 3000, received=3001)
    h.add(ItemKind.ONLINE, 3000.5, received=3001.5, state="running")
    fold = rebuild(h.items, 4000)
    assert states(fold) == [("running", 0, 1000), ("unknown", 1000, 3000), ("running", 3000, None)]
    offline = next(e for e in fold.episodes if e.kind == "offline")
    assert offline.restarted


def test_a_flapping_link_is_one_offline_episode() -> None:
    h = History()
    h.add(ItemKind.ONLINE, 0, state="running")
    for k in range(5):
        base = 1000 + k * 500
        h.add(ItemKind.OFFLINE, base)
        h.add(ItemKind.ONLINE, base + 400, state="running")  # away 400 s, back 100 s
    fold = rebuild(h.items, 10_000)
    offline = [e for e in fold.episodes if e.kind == "offline"]
    assert len(offline) == 1
    assert (offline[0].start - T0, offline[0].end - T0) == (1000, 3400)  # type: ignore[operator]
    short = History()
    for k in range(10):
        short.add(ItemKind.OFFLINE, 1000 + k * 100)
        short.add(ItemKind.ONLINE, 1000 + k * 100 + 30, state="running")
    assert [e for e in rebuild(short.items, 10_000).episodes if e.kind == "offline"] == []


def test_continuing_from_a_snapshot_equals_rebuilding() -> None:
    h = History()
    h.add(ItemKind.ONLINE, 0, state="running")
    h.raised(100)
    h.raised(200, "B", effect="degraded")
    h.cleared(300)
    h.cleared(350, "B")
    h.add(ItemKind.MAINT_START, 500, planned_end=T0 + 600)
    h.add(ItemKind.MAINT_END, 700)
    whole = rebuild(h.items, 800)
    state: EngineState | None = None
    segments = []
    episodes = {}
    place_clock = Clock()
    for item in h.items:
        place([item], place_clock, CONFIG.skew_tolerance)
        fold = Fold(CONFIG, state, full=state is None)
        fold.feed(item)
        fold.advance(item.received)
        segments = [s for s in segments if fold.since is None or s.start < fold.since] + fold.segments
        for ep in fold.episodes:
            episodes[(ep.kind, ep.start)] = ep
        state = EngineState.from_json(fold.state.to_json())
    last = Fold(CONFIG, state, full=False)
    last.advance(T0 + 800)
    segments = [s for s in segments if last.since is None or s.start < last.since] + last.segments
    assert [(s.state, s.start, s.end) for s in segments] == [
        (s.state, s.start, s.end) for s in whole.segments
    ]
    assert sorted((e.kind, e.start, e.end, e.detect, tuple(e.codes)) for e in episodes.values()) == sorted(
        (e.kind, e.start, e.end, e.detect, tuple(e.codes)) for e in whole.episodes
    )
