"""Every KPI column: its name, label, unit and the definition shown as a tooltip.

The texts say exactly what :mod:`server.kpi.reference` and :mod:`server.kpi.query` compute
(docs/kpis.md has the same formulas with examples). Units: ``count``, ``seconds``, ``ratio``
(0-1), ``money`` (the customer's ``cost_per_dispatch`` currency), ``bool``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "COLUMNS",
    "DEFINITIONS",
    "GROUP_COLUMNS",
    "HIT_RANK",
    "KNOWLEDGE",
    "REPEAT_WINDOW_S",
    "Kpi",
    "definitions_dict",
]

REPEAT_WINDOW_S = 30 * 86400.0
"""A repeat is the same fault code on the same device within 30 days of a restore."""


@dataclass(frozen=True, slots=True)
class Kpi:
    name: str
    label: str
    unit: str
    definition: str


_PERIOD = (
    "P = [from, to) half-open, UTC, cut at the time of the report when `to` is later. "
    "Customer and site are the device's at the time (of each moment of state; of an incident's "
    "t_fault); model is its current one."
)
_RESOLVED_IN_P = "over incidents resolved (t_resolved) in P, whenever they started; never clipped"
_RESTORED_IN_P = (
    "over the incident episodes restored in P (their restore in P, whenever they began; never "
    "clipped), of every incident whatever its status; an episode not restored by the end of P "
    "is left out (censored) and counts in the period of its restore"
)


def _durations(
    prefix: str, label: str, formula: str, population: str, counted: str = "incidents"
) -> list[Kpi]:
    return [
        Kpi(
            f"{prefix}_n",
            f"{label} — {counted}",
            "count",
            f"{counted.capitalize()} with a value for {formula}, {population}.",
        ),
        Kpi(
            f"{prefix}_mean_s",
            f"{label} (mean)",
            "seconds",
            f"Mean of {formula}, {population}. Durations are never negative: t_fault is clamped to "
            "<= t_detect and a negative difference counts 0.",
        ),
        Kpi(
            f"{prefix}_median_s",
            f"{label} (median)",
            "seconds",
            f"Median of {formula} (linear interpolation between closest ranks), {population}.",
        ),
        Kpi(
            f"{prefix}_p90_s",
            f"{label} (p90)",
            "seconds",
            f"90th percentile of {formula}: rank (n - 1)·0.9 with linear interpolation, {population}.",
        ),
    ]


HIT_RANK = 5
"""A suggestion shown at this 1-based rank or better counts for kb_suggestion_hit5."""

_KB_RESOLVED = "incidents resolved (t_resolved) in P"
_LINKED = (
    "with at least one article link (kb_article_links: resolved with an existing article or drafted from)"
)

KNOWLEDGE: tuple[Kpi, ...] = (
    Kpi("kb_linked", "KB: linked", "count", f"Of the {_KB_RESOLVED}: those {_LINKED}."),
    Kpi("kb_link_rate", "KB link rate", "ratio", "kb_linked / resolved."),
    Kpi(
        "kb_links",
        "KB: links",
        "count",
        f"Article links of the {_KB_RESOLVED} (one per article and incident).",
    ),
    Kpi(
        "kb_reused",
        "KB: reuses",
        "count",
        "Of kb_links: links to an article created before the incident's t_detect (the knowledge "
        "existed when the problem began; an article drafted from the incident, or written during "
        "it, is not a reuse).",
    ),
    Kpi("kb_reuse_rate", "KB reuse rate", "ratio", "kb_reused / kb_links."),
    Kpi(
        "kb_resolve_with_mean_s",
        "Resolve time with KB (mean)",
        "seconds",
        f"Mean of max(0, t_resolved - t_detect) over the {_KB_RESOLVED} {_LINKED}.",
    ),
    Kpi(
        "kb_resolve_without_mean_s",
        "Resolve time without KB (mean)",
        "seconds",
        f"Mean of max(0, t_resolved - t_detect) over the {_KB_RESOLVED} without an article link. "
        "A comparison, not a causal effect: the incidents differ in kind.",
    ),
    Kpi(
        "kb_applied",
        "KB: suggestions applied",
        "count",
        f"Of the {_KB_RESOLVED}: those for which a suggested article's remote action was sent "
        "(timeline `knowledge.applied`).",
    ),
    Kpi(
        "kb_applied_hits",
        "KB: applied suggestions that fixed it",
        "count",
        "Of kb_applied: those resolved with an article that was applied, its fix marked as "
        "working (a link with fixed = true).",
    ),
    Kpi(
        "kb_applied_hit_rate",
        "KB applied-suggestion hit rate",
        "ratio",
        "kb_applied_hits / kb_applied: of the suggestions acted on, how often the fix worked "
        "(kb_suggestion_hit5 is the share of incidents whose fix had been suggested).",
    ),
    Kpi(
        "kb_shown",
        "KB: suggestions shown",
        "count",
        f"Of the {_KB_RESOLVED}: those for which suggestions were shown at or before t_resolved "
        "(kb_suggestions_shown: a row with first_shown_at <= t_resolved; rows are recorded "
        "whenever suggestions are served — API or `fleetcare kb suggest` — while the incident "
        "is unresolved).",
    ),
    Kpi(
        "kb_shown_hits5",
        "KB: shown suggestions in the top 5 that fixed it",
        "count",
        f"Of kb_shown: those with a link whose fix worked (fixed = true) to an article shown for "
        f"the incident at or before t_resolved with best rank <= {HIT_RANK} (1 = first).",
    ),
    Kpi(
        "kb_suggestion_hit5",
        "KB suggestion hit@5",
        "ratio",
        "kb_shown_hits5 / kb_shown: of the incidents resolved after suggestions were shown, the "
        f"share whose working fix had been among the top {HIT_RANK}. An incident resolved with no "
        "article, or with one that did not fix it, is a miss (benchmarks/kb_quality.py measures "
        "hit@1 and hit@5 offline on a simulated year).",
    ),
)
"""Knowledge-base measures (shared/KPIS.md, Knowledge), over the incidents resolved in P."""

GROUP_COLUMNS = ("group_by", "group_key", "group", "from", "to")

COLUMNS: tuple[Kpi, ...] = (
    Kpi(
        "devices",
        "Devices",
        "count",
        "Devices in scope with required time in P. Empty when grouped or filtered by fault code "
        "(equipment state carries no fault code).",
    ),
    Kpi(
        "required_s",
        "Required time",
        "seconds",
        "RequiredTime = |P| minus non-scheduled time (after the device's decommissioning; outside "
        "the customer's contract hours when configured), summed over devices. " + _PERIOD,
    ),
    Kpi(
        "downtime_s",
        "Unplanned downtime",
        "seconds",
        "UDT = per device, the union (never the sum) of its `down` intervals and of maintenance "
        "time past the announced end, not flagged external, within required time; summed over "
        "devices. Open intervals last until the end of P.",
    ),
    Kpi(
        "planned_downtime_s",
        "Planned downtime",
        "seconds",
        "SDT = per device, the union of `maintenance` intervals up to their announced end, minus "
        "unplanned and external downtime (unplanned wins overlaps), within required time.",
    ),
    Kpi(
        "external_downtime_s",
        "External downtime",
        "seconds",
        "Union of `down` intervals (and maintenance overruns) flagged external — customer power or "
        "network loss — minus unplanned downtime. Not the equipment's downtime: shown separately, "
        "does not lower availability.",
    ),
    Kpi(
        "operating_s",
        "Operating time",
        "seconds",
        "Required time in `running` or `degraded` and in none of the states above.",
    ),
    Kpi(
        "unknown_s",
        "Unknown time",
        "seconds",
        "Required time with no known state: `unknown` (agent or network offline) or no interval "
        "at all. Neither up nor down.",
    ),
    Kpi(
        "uptime_s",
        "Uptime",
        "seconds",
        "Known required time not in unplanned downtime = required - unknown - downtime "
        "(planned and external downtime are not unplanned downtime).",
    ),
    Kpi("coverage", "Coverage", "ratio", "Known time / required time = (required - unknown) / required."),
    Kpi(
        "availability",
        "Availability",
        "ratio",
        "Σ uptime / Σ known required time = 1 - downtime / (required - unknown), device-hour "
        "weighted over the devices of the row (never a mean of per-device percentages); unknown "
        "time is left out. Read it with its coverage and bounds.",
    ),
    Kpi(
        "availability_pessimistic",
        "Availability (pessimistic)",
        "ratio",
        "Σ uptime / Σ required time: unknown time counted as down. Lower bound.",
    ),
    Kpi(
        "availability_optimistic",
        "Availability (optimistic)",
        "ratio",
        "1 - Σ downtime / Σ required time: unknown time counted as up. Upper bound; this is "
        "Availability = 1 - Downtime / RequiredTime when every state is known.",
    ),
    Kpi(
        "failure_episodes",
        "Failure episodes",
        "count",
        "Failures (incidents with effect `down`, not external) of one device whose "
        "[t_fault, t_restored) overlap are one episode (t_resolved when no restore was recorded; "
        "no end while open); counted in the period its first t_fault falls in. By fault code: the "
        "code of the episode's first incident.",
    ),
    Kpi(
        "mtbf_s",
        "MTBF",
        "seconds",
        "Σ uptime in P / failure episodes starting in P. Empty when none started (see "
        "mtbf_censored). Empty when grouped or filtered by fault code.",
    ),
    Kpi(
        "mtbf_censored",
        "MTBF censored",
        "bool",
        "True when no failure episode started in P: MTBF is then only known to be > uptime "
        "(reported in mtbf_lower_bound_s), never infinity.",
    ),
    Kpi(
        "mtbf_lower_bound_s",
        "MTBF lower bound",
        "seconds",
        "With no failure in P: MTBF > this uptime. Empty otherwise.",
    ),
    *_durations(
        "mtrs_episode",
        "MTRS per episode",
        "restore - fault of each episode of an incident (its outages: the one that opened it "
        "and each recurrence that joined or reopened it, incidents.episodes; fault: the "
        "episode's start, clamped to <= its detection; restore: its end, the device back from "
        "down/degraded) — each outage as it happened",
        _RESTORED_IN_P,
        counted="episodes",
    ),
    *_durations(
        "mtrs",
        "MTRS per incident",
        "t_restored - t_fault (restore of service: detection + repair, the downtime-relevant MTTR; "
        "for an incident of several episodes, from the first one's fault to the last one's "
        "restore, the time between them included)",
        _RESOLVED_IN_P,
    ),
    *_durations("mtta", "MTTA", "t_ack - t_detect (first human acknowledgement)", _RESOLVED_IN_P),
    *_durations(
        "mttrespond",
        "MTTRespond",
        "t_respond - t_detect (first remediation: command, guidance, engineer assigned)",
        _RESOLVED_IN_P,
    ),
    *_durations("mttresolve", "MTTResolve", "t_resolved - t_detect", _RESOLVED_IN_P),
    Kpi(
        "open_at_end",
        "Open at period end",
        "count",
        "Incidents detected before the end of P and not resolved by then (t_resolved empty or "
        ">= end). Per week/month: at the end of each bucket.",
    ),
    Kpi("open_age_mean_s", "Open age (mean)", "seconds", "Mean of (end of P - t_detect) over open_at_end."),
    Kpi(
        "open_age_median_s",
        "Open age (median)",
        "seconds",
        "Median of (end of P - t_detect) over open_at_end.",
    ),
    Kpi(
        "open_age_p90_s",
        "Open age (p90)",
        "seconds",
        "90th percentile of (end of P - t_detect) over open_at_end.",
    ),
    Kpi(
        "open_age_max_s",
        "Open age (max)",
        "seconds",
        "Age of the oldest incident still open at the end of P.",
    ),
    Kpi("incidents", "Incidents", "count", "Incidents opened (t_detect) in P."),
    Kpi(
        "remote_used",
        "Remote sessions used",
        "count",
        "Incidents opened in P in which a remote session or command was used.",
    ),
    Kpi("remote_usage_rate", "Remote-maintenance usage", "ratio", "remote_used / incidents."),
    Kpi(
        "resolved",
        "Resolved",
        "count",
        "Incidents resolved (t_resolved) in P; a reopened incident is the same incident.",
    ),
    Kpi(
        "resolved_auto",
        "Resolved: auto",
        "count",
        "Resolved in P with channel `auto` (cleared with no human action).",
    ),
    Kpi(
        "resolved_customer",
        "Resolved: customer",
        "count",
        "Resolved in P with channel `customer` (customer followed guided steps).",
    ),
    Kpi(
        "resolved_remote",
        "Resolved: remote",
        "count",
        "Resolved in P with channel `remote` (technician's remote session or command).",
    ),
    Kpi(
        "resolved_field",
        "Resolved: field",
        "count",
        "Resolved in P with channel `field` (engineer dispatched).",
    ),
    Kpi(
        "self_resolution_rate",
        "Self-resolution rate",
        "ratio",
        "(auto + customer + remote) / resolved: resolved without dispatching an engineer.",
    ),
    Kpi("remote_resolution_rate", "Remote-resolution rate", "ratio", "remote / resolved."),
    Kpi("customer_self_service_rate", "Customer self-service rate", "ratio", "customer / resolved."),
    Kpi("auto_recovery_rate", "Auto-recovery rate", "ratio", "auto / resolved."),
    Kpi("dispatch_rate", "Dispatch rate", "ratio", "field / resolved."),
    Kpi(
        "dispatches_avoided",
        "Dispatches avoided",
        "count",
        "Incidents resolved in P by `remote` or `customer` whose triage said 'needs dispatch' "
        "under the baseline policy.",
    ),
    Kpi(
        "dispatches_avoided_value",
        "Dispatches avoided (value)",
        "money",
        "Σ over dispatches avoided of the device's customer's cost_per_dispatch.",
    ),
    Kpi(
        "downtime_avoided_s",
        "Downtime avoided (estimate)",
        "seconds",
        "Σ over dispatches avoided of max(0, baseline restore time - actual restore time): the "
        "baseline policy (an engineer for every such incident) would have restored in "
        "[kpi] baseline_restore_hours; actual = t_restored (t_resolved when none was recorded) "
        "- t_fault (clamped to <= t_detect). An estimate, not measured downtime.",
    ),
    Kpi(
        "dispatched_resolved",
        "Dispatched, resolved",
        "count",
        "Incidents resolved in P with channel `field`.",
    ),
    Kpi(
        "first_time_fixes",
        "First-time fixes",
        "count",
        "Of dispatched_resolved: at most one recorded visit, and no incident with the same fault "
        "code on the same device with t_fault in [t_restored, t_restored + 30 days) (t_resolved "
        "when t_restored is empty).",
    ),
    Kpi("first_time_fix_rate", "First-time fix rate", "ratio", "first_time_fixes / dispatched_resolved."),
    Kpi("failures", "Failures", "count", "Incidents with effect `down`, not external, with t_fault in P."),
    Kpi(
        "repeat_failures",
        "Repeat failures",
        "count",
        "Of failures: those whose t_fault is within 30 days after the t_restored of another "
        "failure with the same fault code on the same device (t_restored <= t_fault < t_restored + 30 d).",
    ),
    Kpi("repeat_failure_rate", "Repeat-failure rate", "ratio", "repeat_failures / failures."),
    Kpi(
        "transient_faults",
        "Transient faults",
        "count",
        "Faults raised in P that cleared within the debounce window: counted here, they open no "
        "incident (so the auto-recovery rate is not a noise counter).",
    ),
    *KNOWLEDGE,
)

DEFINITIONS: dict[str, Kpi] = {kpi.name: kpi for kpi in COLUMNS}


def definitions_dict() -> dict[str, dict[str, str]]:
    """``{name: {"label", "unit", "definition"}}`` for the API and the UI's tooltips."""
    return {kpi.name: {"label": kpi.label, "unit": kpi.unit, "definition": kpi.definition} for kpi in COLUMNS}
