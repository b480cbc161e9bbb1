"""The reference engine: every KPI from plain records, in Python, as the definitions read.

Slow (it walks every record) and obvious on purpose: the SQL engine (:mod:`server.kpi.query`)
must give the same numbers, and the tests check that it does. Conventions (docs/kpis.md):

- P = [t0, te) half-open; te = min(to, as_of). Every interval is clipped to the device's
  required time inside P; an open interval (no end) lasts until te.
- Per device, time is a union of intervals — never a sum. One state per instant, by
  precedence: unplanned down > external down > planned maintenance > running/degraded >
  unknown (no known state, including no interval at all).
- Incident durations are never negative: t_fault is clamped to <= t_detect, and a negative
  difference counts 0.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.db.models import Channel, DeviceState
from server.kpi import intervals as iv
from server.kpi.calendar import Bucket, buckets, contract_windows, parse_contract_hours
from server.kpi.definitions import HIT_RANK, REPEAT_WINDOW_S
from server.kpi.records import Dataset, DeviceRecord, IncidentRecord, StateRecord
from server.kpi.report import (
    DurationSummary,
    GroupBy,
    Names,
    Period,
    Report,
    ReportSpec,
    RowAggregates,
    RowKey,
    StateTotals,
    assemble,
)

__all__ = [
    "downtime_avoided",
    "episode_restores",
    "failure_end",
    "fault_time",
    "is_failure",
    "ownership",
    "reference_report",
    "state_levels",
]

INF = math.inf


def fault_time(incident: IncidentRecord) -> float:
    """t_fault clamped to <= t_detect (device clocks can be skewed)."""
    return min(incident.fault_s, incident.detect_s)


def is_failure(incident: IncidentRecord) -> bool:
    return incident.effect == DeviceState.DOWN.value and not incident.external


def failure_end(incident: IncidentRecord) -> float:
    """Where a failure ends: t_restored; t_resolved when no restore was recorded; never while
    the incident is open."""
    if incident.restored_s is not None:
        return incident.restored_s
    return INF if incident.resolved_s is None else incident.resolved_s


def episode_restores(incident: IncidentRecord) -> list[tuple[float, float]]:
    """(restore time, restore) of each restored failure episode of the incident: restore -
    fault, the fault clamped to <= the episode's detection, never negative."""
    return [
        (max(0.0, restored - min(fault, detect)), restored)
        for fault, detect, restored in incident.episodes
        if restored is not None
    ]


def downtime_avoided(incident: IncidentRecord, baseline_restore_s: float) -> float:
    """How much sooner than the baseline policy's restore time a dispatch avoided was restored:
    max(0, baseline - (t_restored, else t_resolved, - clamped t_fault))."""
    fixed = incident.restored_s if incident.restored_s is not None else incident.resolved_s
    assert fixed is not None, "a dispatch avoided is a resolved incident"
    return max(0.0, baseline_restore_s - max(0.0, fixed - fault_time(incident)))


def state_levels(states: Iterable[StateRecord]) -> list[list[iv.Interval]]:
    """A device's intervals by precedence level: [unplanned down, external down, planned
    maintenance, running/degraded]. Maintenance past ``planned_end`` is down."""
    levels: list[list[iv.Interval]] = [[], [], [], []]
    for s in states:
        end = INF if s.end_s is None else s.end_s
        if s.state == DeviceState.DOWN.value:
            levels[1 if s.external else 0].append((s.start_s, end))
        elif s.state == DeviceState.MAINTENANCE.value:
            if s.planned_end_s is None:
                levels[2].append((s.start_s, end))
            else:
                levels[2].append((s.start_s, min(end, s.planned_end_s)))
                if s.planned_end_s < end:
                    levels[1 if s.external else 0].append((max(s.start_s, s.planned_end_s), end))
        elif s.state in (DeviceState.RUNNING.value, DeviceState.DEGRADED.value):
            levels[3].append((s.start_s, end))
    return levels


@dataclass(frozen=True, slots=True)
class Piece:
    """A device's customer and site over [start, end)."""

    start: float
    end: float
    customer_id: int | None
    site_id: int | None


def ownership(ds: Dataset) -> dict[str, list[Piece]]:
    """Per device, its customer/site periods covering all time: each record lasts until the
    device's next one, the first reaches back to the beginning; without records, the device's
    current customer/site throughout."""
    records: dict[str, list[tuple[float, int | None, int | None]]] = defaultdict(list)
    for a in ds.assignments:
        records[a.device_id].append((a.from_s, a.customer_id, a.site_id))
    out: dict[str, list[Piece]] = {}
    for device in ds.devices:
        rows = sorted(records.get(device.id, []), key=lambda r: r[0])
        if not rows:
            out[device.id] = [Piece(-INF, INF, device.customer_id, device.site_id)]
            continue
        bounds = [-INF, *(r[0] for r in rows[1:]), INF]
        out[device.id] = [
            Piece(bounds[k], bounds[k + 1], c, site)
            for k, (_, c, site) in enumerate(rows)
            if bounds[k + 1] > bounds[k]
        ]
    return out


def _summary(values: list[float], *, with_max: bool = False) -> DurationSummary:
    values = sorted(values)
    return DurationSummary(
        n=len(values),
        total=sum(values),
        median=iv.percentile(values, 1, 2),
        p90=iv.percentile(values, 9, 10),
        maximum=(values[-1] if values else None) if with_max else None,
    )


class _Buckets:
    def __init__(self, cuts: list[Bucket]) -> None:
        self.cuts = cuts
        self.starts = [b.start for b in cuts]

    def index(self, ts: float | None) -> int | None:
        """The bucket holding ``ts``, or None outside the period."""
        if ts is None or not self.cuts or ts < self.cuts[0].start or ts >= self.cuts[-1].end:
            return None
        return self.cuts[bisect.bisect_right(self.starts, ts) - 1].index


class _Reference:
    def __init__(self, ds: Dataset, spec: ReportSpec, period: Period, cuts: list[Bucket]) -> None:
        self.ds, self.spec, self.period, self.cuts = ds, spec, period, cuts
        self.where = _Buckets(cuts)
        self.customers = {c.id: c for c in ds.customers}
        owners = ownership(ds)
        # each device's periods with the customer/site the filters ask for (at the time)
        self.pieces = {
            d.id: [p for p in owners[d.id] if self.owned(p)]
            for d in ds.devices
            if spec.model is None or d.model == spec.model
        }
        self.devices = {d.id: d for d in ds.devices if self.pieces.get(d.id)}
        self.rows: dict[RowKey, RowAggregates] = {}
        self.samples: dict[tuple[RowKey, str], list[float]] = defaultdict(list)
        self.in_scope = [i for i in ds.incidents if i.device_id in self.devices]
        self.repeats: dict[tuple[str, str], list[IncidentRecord]] = defaultdict(list)
        for incident in self.in_scope:
            if incident.fault_code is not None:
                self.repeats[incident.device_id, incident.fault_code].append(incident)
        created = {a.id: a.created_s for a in ds.articles}
        self.links: dict[int, list[tuple[int, bool, bool]]] = defaultdict(list)  # (article, fixed, reused)
        detected = {i.id: i.detect_s for i in self.in_scope}
        for link in ds.links:
            if link.incident_id in detected:
                reused = created.get(link.article_id, INF) < detected[link.incident_id]
                self.links[link.incident_id].append((link.article_id, link.fixed, reused))
        self.applied: dict[int, set[int]] = defaultdict(set)
        for applied in ds.applied:
            self.applied[applied.incident_id].add(applied.article_id)
        self.shown: dict[int, list[tuple[int, int, float]]] = defaultdict(list)  # (article, rank, first)
        for shown in ds.shown:
            self.shown[shown.incident_id].append((shown.article_id, shown.best_rank, shown.first_s))

    def row(self, key: Any, index: int) -> RowAggregates:
        if (key, index) not in self.rows:
            self.rows[key, index] = RowAggregates(state=StateTotals() if self.spec.with_state else None)
        return self.rows[key, index]

    def owned(self, piece: Piece) -> bool:
        return (self.spec.customer is None or piece.customer_id == self.spec.customer) and (
            self.spec.site is None or piece.site_id == self.spec.site
        )

    def piece_at(self, device_id: str, ts: float) -> Piece | None:
        """The device's customer/site period at ``ts``, if the filters keep it."""
        return next((p for p in self.pieces[device_id] if p.start <= ts < p.end), None)

    def device_key(self, device: DeviceRecord, piece: Piece) -> Any:
        group_by = self.spec.group_by
        if group_by is GroupBy.CUSTOMER:
            return piece.customer_id
        if group_by is GroupBy.SITE:
            return piece.site_id
        if group_by is GroupBy.MODEL:
            return device.model
        return None

    def incident_key(self, incident: IncidentRecord, piece: Piece) -> Any:
        if self.spec.group_by is GroupBy.FAULT_CODE:
            return incident.fault_code
        return self.device_key(self.devices[incident.device_id], piece)

    def wanted(self, code: str | None) -> bool:
        return self.spec.fault_code is None or code == self.spec.fault_code

    def run(self) -> dict[RowKey, RowAggregates]:
        group_by = self.spec.group_by
        if group_by is None or group_by.is_time:  # rows that exist even when empty
            for bucket in self.cuts:
                self.row(None, bucket.index)
        elif group_by is not GroupBy.FAULT_CODE:
            for device in self.devices.values():
                for piece in self.pieces[device.id]:
                    if piece.start < self.period.te and piece.end > self.period.t0:
                        self.row(self.device_key(device, piece), 0)
        if self.spec.with_state:
            self.equipment_state()
        for incident in self.in_scope:
            if self.wanted(incident.fault_code):
                self.incident(incident)
        self.episodes()
        self.transients()
        for (row_key, metric), values in self.samples.items():
            setattr(self.rows[row_key], metric, _summary(values, with_max=metric == "open_age"))
        return self.rows

    def incident(self, incident: IncidentRecord) -> None:
        piece = self.piece_at(incident.device_id, fault_time(incident))
        if piece is None:  # the device belonged to a customer/site the filters leave out
            return
        key = self.incident_key(incident, piece)
        opened = self.where.index(incident.detect_s)
        if opened is not None:
            agg = self.row(key, opened)
            agg.incidents += 1
            agg.remote_used += incident.remote_used
        resolved = self.where.index(incident.resolved_s)
        if resolved is not None:
            self.resolved(incident, (key, resolved), piece)
        failed = self.where.index(fault_time(incident)) if is_failure(incident) else None
        if failed is not None:
            agg = self.row(key, failed)
            agg.failures += 1
            agg.repeat_failures += _is_repeat_failure(incident, self.repeats)
        for bucket in self.cuts:  # open at the end of each bucket
            end = bucket.end
            if incident.detect_s < end and (incident.resolved_s is None or incident.resolved_s >= end):
                self.row(key, bucket.index).open_at_end += 1
                self.samples[(key, bucket.index), "open_age"].append(end - incident.detect_s)
        for value, restored in episode_restores(incident):  # MTRS per episode: by its restore
            index = self.where.index(restored)
            if index is not None:
                self.row(key, index)
                self.samples[(key, index), "mtrs_episode"].append(value)

    def resolved(self, incident: IncidentRecord, row_key: RowKey, piece: Piece) -> None:
        agg = self.row(*row_key)
        agg.resolved += 1
        channel = incident.channel
        if channel is not None:
            agg.channels[channel] = agg.channels.get(channel, 0) + 1
        if channel in (Channel.REMOTE.value, Channel.CUSTOMER.value) and incident.needs_dispatch:
            agg.dispatches_avoided += 1
            customer = self.customers.get(piece.customer_id or -1)
            agg.dispatches_avoided_value += customer.cost_per_dispatch if customer else 0.0
            agg.downtime_avoided += downtime_avoided(incident, self.spec.baseline_restore_s)
        if channel == Channel.FIELD.value:
            agg.dispatched_resolved += 1
            if incident.visits <= 1 and not _repeated_after_fix(incident, self.repeats):
                agg.first_time_fixes += 1
        self.knowledge(incident, agg)
        for metric, begin, end in (
            ("mtrs", fault_time(incident), incident.restored_s),
            ("mtta", incident.detect_s, incident.ack_s),
            ("mttrespond", incident.detect_s, incident.respond_s),
            ("mttresolve", incident.detect_s, incident.resolved_s),
        ):
            if end is not None:
                self.samples[row_key, metric].append(max(0.0, end - begin))

    def knowledge(self, incident: IncidentRecord, agg: RowAggregates) -> None:
        """Link, reuse, time with and without, applied and shown suggestions (docs/kpis.md,
        Knowledge)."""
        assert incident.resolved_s is not None
        kb, links = agg.kb, self.links.get(incident.id, [])
        took = max(0.0, incident.resolved_s - incident.detect_s)
        if links:
            kb.linked += 1
            kb.links += len(links)
            kb.reused += sum(reused for _, _, reused in links)
            kb.with_total += took
        else:
            kb.without_total += took
        applied = self.applied.get(incident.id)
        if applied:
            kb.applied += 1
            kb.applied_hits += any(article in applied and fixed for article, fixed, _ in links)
        before = [(a, r) for a, r, first in self.shown.get(incident.id, ()) if first <= incident.resolved_s]
        if before:
            kb.shown += 1
            top = {a for a, r in before if r <= HIT_RANK}
            kb.shown_hits5 += any(article in top and fixed for article, fixed, _ in links)

    def episodes(self) -> None:
        failures: dict[str, list[tuple[float, float, int, IncidentRecord]]] = defaultdict(list)
        for incident in self.in_scope:
            if is_failure(incident):
                failures[incident.device_id].append(
                    (fault_time(incident), failure_end(incident), incident.id, incident)
                )
        for items in failures.values():
            for episode in iv.episodes(items):
                index = self.where.index(episode.start)
                piece = self.piece_at(episode.first.device_id, episode.start)
                if index is not None and piece is not None and self.wanted(episode.first.fault_code):
                    self.row(self.incident_key(episode.first, piece), index).failure_episodes += 1

    def transients(self) -> None:
        for transient in self.ds.transients:
            device = self.devices.get(transient.device_id)
            index = self.where.index(transient.raised_s)
            if device is None or index is None or not self.wanted(transient.code):
                continue
            piece = self.piece_at(device.id, transient.raised_s)
            if piece is None:
                continue
            if self.spec.group_by is GroupBy.FAULT_CODE:
                key = transient.code
            else:
                key = self.device_key(device, piece)
            self.row(key, index).transient_faults += 1

    def equipment_state(self) -> None:
        t0, te = self.period.t0, self.period.te
        schedules: dict[int | None, list[iv.Interval]] = {}
        states: dict[str, list[StateRecord]] = defaultdict(list)
        for state in self.ds.states:
            if state.device_id in self.devices:
                states[state.device_id].append(state)
        for device in self.devices.values():
            levels = state_levels(states.get(device.id, []))
            nested = [iv.union(itertools.chain.from_iterable(levels[: k + 1])) for k in range(4)]
            counted: set[RowKey] = set()  # a device counts once per row, whatever its moves
            for piece in self.pieces[device.id]:  # the calendar is the customer's at the time
                cid = piece.customer_id
                if cid not in schedules:
                    customer = self.customers.get(cid) if cid is not None else None
                    hours = parse_contract_hours(customer.contract_hours, customer.name) if customer else None
                    schedules[cid] = [(t0, te)] if hours is None else contract_windows(hours, t0, te)
                owned = (
                    piece.start,
                    piece.end if device.decommissioned_s is None else min(piece.end, device.decommissioned_s),
                )
                self.piece_state(device, piece, iv.intersect(schedules[cid], [owned]), nested, counted)

    def piece_state(
        self,
        device: DeviceRecord,
        piece: Piece,
        scheduled: list[iv.Interval],
        nested: list[list[iv.Interval]],
        counted: set[RowKey],
    ) -> None:
        for bucket in self.cuts:
            windows = iv.intersect(scheduled, [(bucket.start, bucket.end)])
            required = iv.length(windows)
            if required <= 0:
                continue
            row_key = (self.device_key(device, piece), bucket.index)
            totals = self.row(*row_key).state
            assert totals is not None
            u = [iv.length(iv.intersect(level, windows)) for level in nested]
            if row_key not in counted:
                counted.add(row_key)
                totals.devices += 1
            totals.required += required
            totals.down += u[0]
            totals.down_or_external += u[1]
            totals.not_up += u[2]
            totals.known += u[3]


def reference_report(ds: Dataset, spec: ReportSpec, *, now: datetime | None = None) -> Report:
    """Every KPI of ``spec`` from the records of ``ds``."""
    period = spec.period(now)
    cuts = buckets(period.t0, period.te, spec.grain)
    names = Names({c.id: c.name for c in ds.customers}, {s.id: (s.customer_id, s.name) for s in ds.sites})
    rows = _Reference(ds, spec, period, cuts).run()
    return assemble(spec, period, cuts, rows, names=names, engine="reference")


def _repeated_after_fix(
    incident: IncidentRecord, repeats: dict[tuple[str, str], list[IncidentRecord]]
) -> bool:
    """Another incident with the same fault code on the same device within 30 days after the
    fix (t_restored, or t_resolved when there is none)."""
    if incident.fault_code is None:
        return False
    fixed = incident.restored_s if incident.restored_s is not None else incident.resolved_s
    assert fixed is not None
    return any(
        other.id != incident.id and fixed <= fault_time(other) < fixed + REPEAT_WINDOW_S
        for other in repeats[incident.device_id, incident.fault_code]
    )


def _is_repeat_failure(
    incident: IncidentRecord, repeats: dict[tuple[str, str], list[IncidentRecord]]
) -> bool:
    """A failure within 30 days after the restore of another failure with its code and device."""
    if incident.fault_code is None:
        return False
    failed = fault_time(incident)
    return any(
        other.id != incident.id
        and is_failure(other)
        and other.restored_s is not None
        and other.restored_s <= failed < other.restored_s + REPEAT_WINDOW_S
        for other in repeats[incident.device_id, incident.fault_code]
    )
