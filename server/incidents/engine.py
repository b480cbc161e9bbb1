"""The derivation of one device's equipment states and failure episodes from its history. Pure:
no database, no clock, no I/O — the same input always gives the same output, which is what
makes every interval and incident time recomputable from the event history.

Input: history :class:`Item` s (events and status messages of one device). Output: state
:class:`Segment` s (non-overlapping, one state per instant) and :class:`Episode` s (fault
episodes that become incidents, offline episodes, transient faults).

    items = place(items, clock, tolerance)       # receive order -> positions (server/incidents/items.py)
    fold = Fold(config, state=None)              # None: from the beginning (a rebuild)
    for item in sorted(items, key=position_key):
        fold.feed(item)
    fold.advance(now)                            # debounce, grace, planned ends falling due
    fold.segments, fold.episodes, fold.state     # what to store; state is the snapshot

A fold may also continue from a snapshot (:class:`EngineState`) with newer items only; it then
raises :class:`NeedsRebuild` when an item is older than what was already processed (late,
store-and-forward data) or when presence changes reach back in time. The caller rebuilds the
device from its whole history instead. Times are epoch seconds (float) on the server's clock.
The rules are written down in docs/incidents.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from server.incidents.items import Clock, Item, ItemKind, attach_gaps, place, position_key

__all__ = [
    "EFFECTS",
    "SEVERITY_RANK",
    "Clock",
    "EngineConfig",
    "EngineState",
    "Episode",
    "Fold",
    "Item",
    "ItemKind",
    "NeedsRebuild",
    "Segment",
    "attach_gaps",
    "place",
    "position_key",
]

DOWN, DEGRADED, RUNNING, MAINTENANCE, UNKNOWN = "down", "degraded", "running", "maintenance", "unknown"
EFFECTS = frozenset({DOWN, DEGRADED})
REPORTED_STATES = frozenset({RUNNING, DEGRADED, DOWN, MAINTENANCE})
SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2, "critical": 3}


class NeedsRebuild(Exception):
    """The snapshot cannot absorb this change; rebuild the device from its history."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    debounce: float = 60.0  # s: an episode shorter than this is transient (no incident)
    grace: float = 300.0  # s: offline longer than this records unknown and opens an incident
    flap_window: float = 300.0  # s online before an offline incident counts as restored
    skew_tolerance: float = 5.0  # s: device clock offsets below this are not corrected


@dataclass(slots=True)
class Segment:
    state: str
    start: float
    end: float | None = None
    planned_end: float | None = None  # maintenance: the announced end


@dataclass(slots=True)
class Episode:
    """A fault episode (the device down or degraded) or an offline episode.

    A fault episode becomes an incident once it has lasted ``debounce`` (``detect`` is then
    set); one that ends sooner is transient. ``faults`` lists ``[code, start, end]`` per fault.
    """

    kind: str  # "fault" | "offline"
    start: float
    received: float  # receive time of the message that began it
    effect: str
    severity: str
    codes: list[str] = field(default_factory=list)
    faults: list[list[Any]] = field(default_factory=list)
    detail: str = ""
    detect: float | None = None
    end: float | None = None
    end_received: float | None = None  # when the server could know it had ended
    incident_id: int | None = None
    returned: float | None = None  # offline: back at, awaiting the flap window
    restarted: bool = False  # offline: the agent restarted during the episode
    external: bool = False  # offline: the agent kept running (the connection was lost)

    @property
    def promoted(self) -> bool:
        return self.detect is not None

    @property
    def transient(self) -> bool:
        return self.end is not None and self.detect is None


@dataclass(slots=True)
class Gap:
    off: float
    end: float | None  # known when rebuilding; None while the device is away
    restart: int | None
    long: bool = False


@dataclass(slots=True)
class Fault:
    code: str
    start: float
    effect: str
    severity: str


@dataclass(slots=True)
class EngineState:
    """Everything the fold needs to continue later (stored as JSON on the tracker)."""

    skew: float | None = None
    mark: float = -math.inf
    mark_seq: int = -1
    reported: str | None = None
    faults: dict[str, Fault] = field(default_factory=dict)
    maintenance: bool = False
    planned_end: float | None = None
    overrun: bool = False
    segment: Segment | None = None
    episode: Episode | None = None
    offline: Episode | None = None
    gap: Gap | None = None
    unknown: bool = False  # an unknown overlay is open (the device is away past the grace)
    restart_gap: list[float] | None = None  # [off, seq, long]: the agent.started ending a gap
    last_position: float = -math.inf

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("mark", "last_position"):
            if math.isinf(data[key]):
                data[key] = None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> EngineState:
        if not data:
            return cls()

        def episode(raw: dict[str, Any] | None) -> Episode | None:
            return None if raw is None else Episode(**raw)

        return cls(
            skew=data.get("skew"),
            mark=-math.inf if data.get("mark") is None else data["mark"],
            mark_seq=data.get("mark_seq", -1),
            reported=data.get("reported"),
            faults={code: Fault(**raw) for code, raw in data.get("faults", {}).items()},
            maintenance=data.get("maintenance", False),
            planned_end=data.get("planned_end"),
            overrun=data.get("overrun", False),
            segment=None if data.get("segment") is None else Segment(**data["segment"]),
            episode=episode(data.get("episode")),
            offline=episode(data.get("offline")),
            gap=None if data.get("gap") is None else Gap(**data["gap"]),
            unknown=data.get("unknown", False),
            restart_gap=data.get("restart_gap"),
            last_position=-math.inf if data.get("last_position") is None else data["last_position"],
        )


def _worse(a: str, b: str) -> str:
    return a if SEVERITY_RANK.get(a, 0) >= SEVERITY_RANK.get(b, 0) else b


class Fold:
    """Feeds items in position order into an :class:`EngineState`, collecting outputs.

    ``full=True``: a rebuild from the first item; retroactive changes (an unknown overlay that
    starts before the last change) are applied to the collected segments. ``full=False``: a
    continuation from a snapshot; anything reaching before the snapshot raises NeedsRebuild.
    """

    def __init__(self, config: EngineConfig, state: EngineState | None = None, *, full: bool) -> None:
        self.config = config
        self.state = state if state is not None else EngineState()
        self.full = full
        self.closed: list[Segment] = []  # segments closed during this fold
        self.ended: list[Episode] = []  # episodes ended during this fold
        self.since = None if full or self.state.segment is None else self.state.segment.start
        opened = self.state.segment
        self.initial = (
            None if opened is None else Segment(opened.state, opened.start, opened.end, opened.planned_end)
        )

    # -- outputs -----------------------------------------------------------------------------

    @property
    def segments(self) -> list[Segment]:
        """Closed segments of this fold, then the open one."""
        current = [self.state.segment] if self.state.segment is not None else []
        return [*self.closed, *current]

    @property
    def episodes(self) -> list[Episode]:
        """Episodes ended in this fold, then the ongoing ones, by start."""
        ongoing = [ep for ep in (self.state.episode, self.state.offline) if ep is not None]
        return sorted([*self.ended, *ongoing], key=lambda ep: (ep.start, ep.kind))

    def due(self) -> float | None:
        """The next time something falls due without a new message (None: nothing)."""
        times = [when for when, _ in self._due_events()]
        return min(times) if times else None

    # -- feeding -----------------------------------------------------------------------------

    def feed(self, item: Item) -> None:
        s = self.state
        if not self.full and (item.position, item.seq) < (s.mark, s.mark_seq):
            raise NeedsRebuild(f"item {item.seq} at {item.position:.3f} is before {s.mark:.3f}")
        self.advance(item.position)
        if s.gap is not None and s.gap.end is None and item.kind is not ItemKind.OFFLINE:
            self._returned(item)
        self._apply(item)
        s.last_position = max(s.last_position, item.position)
        self._mark(item.position, item.seq)

    def advance(self, now: float) -> None:
        """Apply everything that falls due up to ``now`` (in time order)."""
        while True:
            events = [(when, action) for when, action in self._due_events() if when <= now]
            if not events:
                return
            when, action = min(events, key=lambda event: event[0])
            when = max(when, self.state.mark)  # never before what was already processed
            action(when)
            self._mark(when, -1)

    def _mark(self, position: float, seq: int) -> None:
        s = self.state
        s.mark, s.mark_seq = max((s.mark, s.mark_seq), (position, seq))

    # -- the rules ---------------------------------------------------------------------------

    def _apply(self, item: Item) -> None:
        s = self.state
        t = item.position
        kind = item.kind
        code = item.code or "UNKNOWN"
        effectful = kind is ItemKind.RAISED and item.effect in EFFECTS
        if effectful and item.effect is not None:
            if code not in s.faults:
                s.faults[code] = Fault(code, t, item.effect, item.severity)
            elif item.effect == DOWN:
                s.faults[code].effect = DOWN
        elif kind is ItemKind.CLEARED:
            if s.faults.pop(code, None) is not None and s.episode is not None:
                self._close_fault_span(s.episode, code, t)
        elif kind in (ItemKind.STATE, ItemKind.ONLINE):
            if item.state in REPORTED_STATES and item.state != s.reported:
                self._report(item.state, t)
        elif kind in (ItemKind.MAINT_START, ItemKind.MAINT_END):
            started = kind is ItemKind.MAINT_START
            s.maintenance, s.planned_end, s.overrun = started, item.planned_at if started else None, False
        elif kind is ItemKind.OFFLINE:
            self._offline(item)
        elif kind is ItemKind.STARTED and s.restart_gap is not None and s.restart_gap[1] == item.seq:
            self._restart(item)
        self._recompute(t, item.received)
        if effectful and s.episode is not None:
            self._join(s.episode, item, t)

    def _report(self, state: str, t: float) -> None:
        s = self.state
        if state == RUNNING:
            for code in list(s.faults):  # the device says it is running again: faults are over
                if s.episode is not None:
                    self._close_fault_span(s.episode, code, t)
            s.faults.clear()
        if state == MAINTENANCE:
            if not s.maintenance:
                s.maintenance, s.planned_end, s.overrun = True, None, False
        elif s.reported == MAINTENANCE:
            s.maintenance, s.planned_end, s.overrun = False, None, False
        s.reported = state

    def _base(self) -> str:
        """The equipment state from what the device said (presence aside)."""
        s = self.state
        effects = {fault.effect for fault in s.faults.values()}
        if DOWN in effects or s.overrun or (s.reported == DOWN and not s.maintenance):
            return DOWN
        if s.maintenance:
            return MAINTENANCE
        if DEGRADED in effects or s.reported == DEGRADED:
            return DEGRADED
        return RUNNING

    def _recompute(self, t: float, received: float) -> None:
        s = self.state
        base = self._base()
        display = UNKNOWN if s.unknown else base
        planned = s.planned_end if display == MAINTENANCE else None
        segment = s.segment
        if segment is None:
            s.segment = Segment(display, t, None, planned)
        elif segment.state != display or segment.planned_end != planned:
            if t <= segment.start:  # a zero-length segment: replace it
                segment.state, segment.planned_end = display, planned
                self._merge_with_previous()
            else:
                segment.end = t
                self.closed.append(segment)
                s.segment = Segment(display, t, None, planned)
        episode = s.episode
        if base in EFFECTS:
            if episode is None:
                s.episode = self._open_episode(base, t, received)
            elif base == DOWN:
                episode.effect = DOWN
        elif episode is not None:
            self._end_episode(episode, t, received)
            s.episode = None

    def _merge_with_previous(self) -> None:
        s = self.state
        if s.segment is not None and self.closed and self.closed[-1].state == s.segment.state:
            previous = self.closed.pop()
            if previous.planned_end == s.segment.planned_end:
                previous.end = None
                s.segment = previous
            else:
                self.closed.append(previous)

    def _open_episode(self, base: str, t: float, received: float) -> Episode:
        s = self.state
        faults = sorted(s.faults.values(), key=lambda fault: fault.start)
        severity = "error" if base == DOWN else "warning"
        for fault in faults:
            severity = _worse(fault.severity, severity) if fault.severity else severity
        detail = ""
        if not faults:
            detail = "maintenance overran its planned end" if s.overrun else f"device reported {base}"
        return Episode(
            kind="fault",
            start=t,
            received=received,
            effect=base,
            severity=severity,
            codes=[fault.code for fault in faults],
            faults=[[fault.code, t, None] for fault in faults],
            detail=detail,
        )

    def _join(self, episode: Episode, item: Item, t: float) -> None:
        code = item.code or "UNKNOWN"
        if code not in episode.codes:
            episode.codes.append(code)
        if not any(span[0] == code and span[2] is None for span in episode.faults):
            episode.faults.append([code, t, None])
        episode.severity = _worse(item.severity, episode.severity)
        if not episode.detail or episode.detail.startswith("device reported"):
            episode.detail = item.detail or f"fault {code}"

    @staticmethod
    def _close_fault_span(episode: Episode, code: str, t: float) -> None:
        for span in episode.faults:
            if span[0] == code and span[2] is None:
                span[2] = t

    def _end_episode(self, episode: Episode, t: float, received: float) -> None:
        episode.end = t
        episode.end_received = max(received, t)
        for span in episode.faults:
            if span[2] is None:
                span[2] = t
        if episode.detect is None and t - episode.start >= self.config.debounce:
            self._promote(episode)
        self.ended.append(episode)

    def _promote(self, episode: Episode) -> None:
        episode.detect = max(episode.start + self.config.debounce, episode.received)

    # -- presence ----------------------------------------------------------------------------

    def _gap_is_long(self, gap: Gap) -> bool:
        return gap.end is not None and gap.end - gap.off >= self.config.grace

    def _offline(self, item: Item) -> None:
        s = self.state
        if s.gap is not None:
            return  # already away (a last will after a goodbye, say)
        s.gap = Gap(off=item.position, end=item.gap_end, restart=item.gap_restart)
        if item.gap_restart is not None:  # rebuilding: the gap's outcome is known
            s.restart_gap = [item.position, item.gap_restart, float(self._gap_is_long(s.gap))]

    def _returned(self, item: Item) -> None:
        """Continuation mode: the first message after an offline status ends the gap."""
        s = self.state
        assert s.gap is not None
        if s.gap.long or item.received - s.gap.off >= self.config.grace:
            raise NeedsRebuild("back from a long gap: its unknown time and offline incident are rebuilt")
        s.gap = None

    def _restart(self, item: Item) -> None:
        """The agent restarted after a long gap: its state was unknown from the later of the
        offline moment and its last message, until the restart."""
        s = self.state
        assert s.restart_gap is not None
        off, _seq, long_gap = s.restart_gap
        s.restart_gap = None
        if not long_gap:
            return
        if s.offline is not None:
            s.offline.restarted = True
        begin = max(off, s.last_position)
        if item.position <= begin:
            return
        self._cut(begin)
        self.closed.append(Segment(UNKNOWN, begin, item.position))
        s.segment = None  # reopened by _recompute at the restart

    def _cut(self, at: float) -> None:
        """Drop what was derived from ``at`` on (rebuilds only: the segments are all here)."""
        if not self.full:
            raise NeedsRebuild("unknown time reaches back before the snapshot")
        s = self.state
        kept: list[Segment] = []
        for segment in [*self.closed, *([s.segment] if s.segment is not None else [])]:
            if segment.start >= at:
                continue
            if segment.end is None or segment.end > at:
                segment.end = at
            kept.append(segment)
        self.closed = kept
        s.segment = None

    def _due_events(self) -> list[tuple[float, Any]]:
        s = self.state
        config = self.config
        events: list[tuple[float, Any]] = []
        if s.maintenance and s.planned_end is not None and not s.overrun:
            events.append((s.planned_end, self._overrun))
        if s.episode is not None and s.episode.detect is None:
            events.append((s.episode.start + config.debounce, self._promote_current))
        gap = s.gap
        if gap is not None and not gap.long and (gap.end is None or self._gap_is_long(gap)):
            events.append((gap.off + config.grace, self._gap_long))
        if gap is not None and gap.end is not None:
            events.append((max(gap.end, gap.off), self._gap_end))
        offline = s.offline
        if offline is not None and offline.returned is not None:
            confirm = offline.returned + config.flap_window
            pending = gap is not None and gap.off < confirm
            if not pending or (gap is not None and gap.end is not None and not self._gap_is_long(gap)):
                events.append((confirm, self._confirm_offline))
        return events

    def _overrun(self, when: float) -> None:
        self.state.overrun = True
        self._recompute(when, when)

    def _promote_current(self, _when: float) -> None:
        assert self.state.episode is not None
        self._promote(self.state.episode)

    def _gap_long(self, when: float) -> None:
        s = self.state
        gap = s.gap
        assert gap is not None
        gap.long = True
        offline = s.offline
        if (
            offline is not None
            and offline.returned is not None
            and gap.off < offline.returned + (self.config.flap_window)
        ):
            offline.returned = None  # flapping: the same offline episode goes on
        else:
            if offline is not None:  # an older episode not yet confirmed cannot be pending here
                self._confirm_offline(when)
            s.offline = Episode(
                kind="offline",
                start=gap.off,
                received=gap.off,
                effect=UNKNOWN,
                severity="error",
                detail="device offline past the grace period",
                detect=gap.off + self.config.grace,
            )
        if gap.restart is not None and s.offline is not None:
            s.offline.restarted = True
        if gap.end is None:  # still away: unknown from the offline moment, until it is back
            self._cut(gap.off)
            s.unknown = True
            s.segment = Segment(UNKNOWN, gap.off)

    def _gap_end(self, when: float) -> None:
        s = self.state
        gap = s.gap
        assert gap is not None
        s.gap = None
        if gap.long and s.offline is not None:
            s.offline.returned = when
        if s.unknown:  # rebuilding an away period that was still open: cannot happen with an end
            s.unknown = False

    def _confirm_offline(self, when: float) -> None:
        s = self.state
        offline = s.offline
        if offline is None:
            return
        returned = offline.returned if offline.returned is not None else when
        offline.end = returned
        offline.end_received = max(returned + self.config.flap_window, returned)
        offline.external = not offline.restarted
        offline.returned = None
        self.ended.append(offline)
        s.offline = None
