"""What a KPI report asks for (:class:`ReportSpec`) and what it returns (:class:`Report`).

Both engines — the reference in :mod:`server.kpi.reference` and the SQL one in
:mod:`server.kpi.query` — fill one :class:`RowAggregates` per row (sums, counts and the
order statistics of durations); :func:`assemble` turns those into the KPI values the same
way for both, so what differs between the engines is only how the aggregates are found.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from server.db.types import utcnow
from server.errors import InvalidInput
from server.kpi.calendar import Bucket, to_datetime
from server.kpi.definitions import COLUMNS
from server.settings import KpiSettings

__all__ = [
    "DEFAULT_BASELINE_RESTORE_S",
    "DEVICE_GROUPS",
    "DurationSummary",
    "GroupBy",
    "KnowledgeTotals",
    "KpiRow",
    "Period",
    "Report",
    "ReportSpec",
    "RowAggregates",
    "RowKey",
    "StateTotals",
    "assemble",
]


class GroupBy(StrEnum):
    CUSTOMER = "customer"
    SITE = "site"
    MODEL = "model"
    FAULT_CODE = "fault_code"
    WEEK = "week"
    MONTH = "month"

    @property
    def is_time(self) -> bool:
        return self in (GroupBy.WEEK, GroupBy.MONTH)


DEVICE_GROUPS = frozenset({GroupBy.CUSTOMER, GroupBy.SITE, GroupBy.MODEL})

DEFAULT_BASELINE_RESTORE_S = KpiSettings().baseline_restore_hours * 3600.0
"""The baseline policy's restore time when the caller gives none (``[kpi] baseline_restore_hours``)."""

RowKey = tuple[Any, int]
"""(group value, bucket index): the group value is None for no grouping and for week/month."""


@dataclass(frozen=True, slots=True)
class Period:
    t0: float  # from
    t1: float  # to, as asked
    te: float  # where the report stops: min(to, as_of), never before from
    as_of: float


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """One report: half-open period [start, end) in UTC, optional grouping and filters.

    ``as_of`` is the time the report is made (default now): a period reaching past it is cut
    there, so open intervals and open incidents are measured up to now, not to the future.
    """

    start: datetime
    end: datetime
    group_by: GroupBy | None = None
    customer: int | None = None
    site: int | None = None
    model: str | None = None
    fault_code: str | None = None
    as_of: datetime | None = None
    baseline_restore_s: float = DEFAULT_BASELINE_RESTORE_S  # for "downtime avoided"

    def __post_init__(self) -> None:
        for name, value in (("from", self.start), ("to", self.end), ("as_of", self.as_of)):
            if value is not None and value.tzinfo is None:
                raise InvalidInput(f"{name}: give a timezone-aware time (or a date)", field=name)
        if not 0 <= self.baseline_restore_s < float("inf"):
            raise InvalidInput(
                "baseline_restore_hours: give a restore time of 0 hours or more",
                field="baseline_restore_hours",
            )
        if self.start >= self.end:
            raise InvalidInput(
                f"from ({self.start.isoformat()}) must be before to ({self.end.isoformat()})", field="from"
            )

    @property
    def with_state(self) -> bool:
        """Equipment-state KPIs exist unless the report is about fault codes."""
        return self.fault_code is None and self.group_by is not GroupBy.FAULT_CODE

    @property
    def grain(self) -> str | None:
        return self.group_by.value if self.group_by is not None and self.group_by.is_time else None

    def period(self, now: datetime | None = None) -> Period:
        as_of = (self.as_of or now or utcnow()).timestamp()
        t0, t1 = self.start.timestamp(), self.end.timestamp()
        return Period(t0=t0, t1=t1, te=max(t0, min(t1, as_of)), as_of=as_of)

    def filters(self) -> dict[str, Any]:
        return {
            key: value
            for key, value in (
                ("customer", self.customer),
                ("site", self.site),
                ("model", self.model),
                ("fault_code", self.fault_code),
            )
            if value is not None
        }


@dataclass(slots=True)
class DurationSummary:
    n: int = 0
    total: float = 0.0
    median: float | None = None
    p90: float | None = None
    maximum: float | None = None

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None


@dataclass(slots=True)
class StateTotals:
    """Sums over the row's devices of nested unions, each clipped to required time:
    ``down`` ⊆ ``down_or_external`` ⊆ ``not_up`` (+ planned) ⊆ ``known`` (+ running/degraded)."""

    devices: int = 0
    required: float = 0.0
    down: float = 0.0
    down_or_external: float = 0.0
    not_up: float = 0.0
    known: float = 0.0


@dataclass(slots=True)
class KnowledgeTotals:
    """The knowledge base's part of a row, over the incidents resolved in it (docs/kpis.md)."""

    linked: int = 0  # resolved with at least one article link
    links: int = 0  # their article links
    reused: int = 0  # links to an article created before the incident's t_detect
    with_total: float = 0.0  # Σ max(0, t_resolved - t_detect) of the linked ones
    without_total: float = 0.0  # … of the others
    applied: int = 0  # a suggested article's remote action was sent for it
    applied_hits: int = 0  # … and it was resolved with (a fixed link to) an applied article
    shown: int = 0  # suggestions were shown for it at or before its resolution
    shown_hits5: int = 0  # … and a fixed link's article had been shown at rank ≤ 5


@dataclass(slots=True)
class RowAggregates:
    state: StateTotals | None = None
    incidents: int = 0
    remote_used: int = 0
    resolved: int = 0
    channels: dict[str, int] = field(default_factory=dict)
    dispatches_avoided: int = 0
    dispatches_avoided_value: float = 0.0
    downtime_avoided: float = 0.0
    dispatched_resolved: int = 0
    first_time_fixes: int = 0
    failures: int = 0
    repeat_failures: int = 0
    failure_episodes: int = 0
    open_at_end: int = 0
    transient_faults: int = 0
    kb: KnowledgeTotals = field(default_factory=KnowledgeTotals)
    mtrs: DurationSummary = field(default_factory=DurationSummary)
    mtrs_episode: DurationSummary = field(default_factory=DurationSummary)  # per failure episode
    mtta: DurationSummary = field(default_factory=DurationSummary)
    mttrespond: DurationSummary = field(default_factory=DurationSummary)
    mttresolve: DurationSummary = field(default_factory=DurationSummary)
    open_age: DurationSummary = field(default_factory=DurationSummary)


STATE_COLUMNS = (
    "devices",
    "required_s",
    "downtime_s",
    "planned_downtime_s",
    "external_downtime_s",
    "operating_s",
    "unknown_s",
    "uptime_s",
    "coverage",
    "availability",
    "availability_pessimistic",
    "availability_optimistic",
    "mtbf_s",
    "mtbf_censored",
    "mtbf_lower_bound_s",
)
"""Empty when the report is grouped or filtered by fault code."""


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _state_values(state: StateTotals | None, episodes: int) -> dict[str, Any]:
    if state is None:
        return dict.fromkeys(STATE_COLUMNS)
    required = state.required
    down = state.down
    unknown = max(0.0, required - state.known)
    known = required - unknown
    uptime = max(0.0, known - down)
    return {
        "devices": state.devices,
        "required_s": required,
        "downtime_s": down,
        "planned_downtime_s": max(0.0, state.not_up - state.down_or_external),
        "external_downtime_s": max(0.0, state.down_or_external - state.down),
        "operating_s": max(0.0, state.known - state.not_up),
        "unknown_s": unknown,
        "uptime_s": uptime,
        "coverage": _ratio(known, required),
        "availability": _ratio(uptime, known),
        "availability_pessimistic": _ratio(uptime, required),
        "availability_optimistic": _ratio(uptime + unknown, required),
        "mtbf_s": uptime / episodes if episodes else None,
        "mtbf_censored": episodes == 0,
        "mtbf_lower_bound_s": None if episodes else uptime,
    }


def _durations(prefix: str, summary: DurationSummary) -> dict[str, Any]:
    return {
        f"{prefix}_n": summary.n,
        f"{prefix}_mean_s": summary.mean,
        f"{prefix}_median_s": summary.median,
        f"{prefix}_p90_s": summary.p90,
    }


def _knowledge_values(kb: KnowledgeTotals, resolved: int) -> dict[str, Any]:
    unlinked = resolved - kb.linked
    return {
        "kb_linked": kb.linked,
        "kb_link_rate": _ratio(kb.linked, resolved),
        "kb_links": kb.links,
        "kb_reused": kb.reused,
        "kb_reuse_rate": _ratio(kb.reused, kb.links),
        "kb_resolve_with_mean_s": kb.with_total / kb.linked if kb.linked else None,
        "kb_resolve_without_mean_s": kb.without_total / unlinked if unlinked > 0 else None,
        "kb_applied": kb.applied,
        "kb_applied_hits": kb.applied_hits,
        "kb_applied_hit_rate": _ratio(kb.applied_hits, kb.applied),
        "kb_shown": kb.shown,
        "kb_shown_hits5": kb.shown_hits5,
        "kb_suggestion_hit5": _ratio(kb.shown_hits5, kb.shown),
    }


def kpi_values(agg: RowAggregates) -> dict[str, Any]:
    """The KPI columns of one row, in :data:`COLUMNS` order."""
    channels = agg.channels
    auto, customer = channels.get("auto", 0), channels.get("customer", 0)
    remote, fieldwork = channels.get("remote", 0), channels.get("field", 0)
    values: dict[str, Any] = {
        **_state_values(agg.state, agg.failure_episodes),
        "failure_episodes": agg.failure_episodes,
        **_durations("mtrs_episode", agg.mtrs_episode),
        **_durations("mtrs", agg.mtrs),
        **_durations("mtta", agg.mtta),
        **_durations("mttrespond", agg.mttrespond),
        **_durations("mttresolve", agg.mttresolve),
        "open_at_end": agg.open_at_end,
        "open_age_mean_s": agg.open_age.mean,
        "open_age_median_s": agg.open_age.median,
        "open_age_p90_s": agg.open_age.p90,
        "open_age_max_s": agg.open_age.maximum,
        "incidents": agg.incidents,
        "remote_used": agg.remote_used,
        "remote_usage_rate": _ratio(agg.remote_used, agg.incidents),
        "resolved": agg.resolved,
        "resolved_auto": auto,
        "resolved_customer": customer,
        "resolved_remote": remote,
        "resolved_field": fieldwork,
        "self_resolution_rate": _ratio(auto + customer + remote, agg.resolved),
        "remote_resolution_rate": _ratio(remote, agg.resolved),
        "customer_self_service_rate": _ratio(customer, agg.resolved),
        "auto_recovery_rate": _ratio(auto, agg.resolved),
        "dispatch_rate": _ratio(fieldwork, agg.resolved),
        "dispatches_avoided": agg.dispatches_avoided,
        "dispatches_avoided_value": agg.dispatches_avoided_value,
        "downtime_avoided_s": agg.downtime_avoided,
        "dispatched_resolved": agg.dispatched_resolved,
        "first_time_fixes": agg.first_time_fixes,
        "first_time_fix_rate": _ratio(agg.first_time_fixes, agg.dispatched_resolved),
        "failures": agg.failures,
        "repeat_failures": agg.repeat_failures,
        "repeat_failure_rate": _ratio(agg.repeat_failures, agg.failures),
        "transient_faults": agg.transient_faults,
        **_knowledge_values(agg.kb, agg.resolved),
    }
    return {kpi.name: values[kpi.name] for kpi in COLUMNS}


@dataclass(frozen=True, slots=True)
class KpiRow:
    group_by: str | None
    key: Any  # customer/site id, model, fault code, bucket label; None for the whole fleet
    label: str
    start: float
    end: float
    values: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": {"by": self.group_by, "key": self.key, "label": self.label},
            "from": _iso(self.start),
            "to": _iso(self.end),
            "kpis": self.values,
        }


def _iso(ts: float) -> str:
    return to_datetime(ts).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Report:
    spec: ReportSpec
    period: Period
    rows: list[KpiRow]
    engine: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step (diagnostics)

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": {
                "from": _iso(self.period.t0),
                "to": _iso(self.period.t1),
                "until": _iso(self.period.te),
                "as_of": _iso(self.period.as_of),
            },
            "group_by": self.spec.group_by.value if self.spec.group_by else None,
            "filters": self.spec.filters(),
            "rows": [row.as_dict() for row in self.rows],
        }


@dataclass(frozen=True, slots=True)
class Names:
    customers: Mapping[int, str]
    sites: Mapping[int, tuple[int, str]]  # site id -> (customer id, name)


def _label(group_by: GroupBy | None, key: Any, bucket: Bucket, names: Names) -> tuple[Any, str]:
    if group_by is None:
        return None, "fleet"
    if group_by.is_time:
        return bucket.label, bucket.label
    if key is None:
        return None, f"(no {group_by.value.replace('_', ' ')})"
    if group_by is GroupBy.CUSTOMER:
        return key, names.customers.get(key, f"customer {key}")
    if group_by is GroupBy.SITE:
        customer_id, site = names.sites.get(key, (None, f"site {key}"))
        owner = names.customers.get(customer_id, "") if customer_id is not None else ""
        return key, f"{owner} / {site}" if owner else site
    return key, str(key)


def assemble(
    spec: ReportSpec,
    period: Period,
    cuts: list[Bucket],
    rows: Mapping[RowKey, RowAggregates],
    *,
    names: Names,
    engine: str,
) -> Report:
    """Rows sorted (buckets by time; groups by label, "none" last) with their KPI values."""
    by_index = {bucket.index: bucket for bucket in cuts}
    out: list[KpiRow] = []
    for (key, index), agg in rows.items():
        bucket = by_index[index]
        public_key, label = _label(spec.group_by, key, bucket, names)
        out.append(
            KpiRow(
                spec.group_by.value if spec.group_by else None,
                public_key,
                label,
                bucket.start,
                bucket.end,
                kpi_values(agg),
            )
        )
    out.sort(key=lambda row: (row.start, row.key is None, row.label, str(row.key)))
    return Report(spec=spec, period=period, rows=out, engine=engine)


def epoch(value: datetime | None) -> float | None:
    return None if value is None else value.astimezone(UTC).timestamp()
