"""Knowledge measures (docs/kpis.md, Knowledge) worked out by hand, through the reference
engine, the SQL engine (SQLite and PostgreSQL) and the JSON / CSV exports.

P = [Mon 2026-03-02, Mon 2026-03-09); ``h(x)`` is x hours after its start. Articles: #1
written at h(-100), #2 at h(20) (drafted from B), #3 at h(30). Incidents (detect → resolve):

| id | device (customer) | code | detect → resolved | links (article, fixed)  | applied |
| A  | d1 (Acme)         | E1   | h(0) → h(2)        | (1, yes)                | 1       |
| B  | d1 (Acme)         | E2   | h(10) → h(20)      | (2, yes)                | —       |
| C  | d2 (Borealis)     | E1   | h(25) → h(29)      | (1, no), (2, yes)       | 1       |
| D  | d2 (Borealis)     | E3   | h(40) → h(41)      | —                       | 3       |
| E  | d1 (Acme)         | E1   | h(50) → h(56)      | —                       | —       |
| I  | d2 (Borealis)     | E3   | h(-5) → h(3)       | (3, yes)                | 3       |
| F  | d2                | E1   | h(60) → open       | (1, yes)  not resolved  | —       |
| G  | d1                | E1   | h(160) → h(170)    | after P                 | —       |
| H  | d2                | E1   | h(-30) → h(-20)    | (1, yes) before P       | 1       |

Resolved in P: A B C D E I (6). Linked: A B C I (4) → link rate 4/6. Links: 1 + 1 + 2 + 1 = 5;
reused (article older than the incident's t_detect): A→1, C→1, C→2 (h(20) < h(25)) = 3; not B→2
(written at h(20), after B began), not I→3 (h(30) > h(-5)) → reuse rate 3/5. Resolve time
with a link: (2 + 10 + 4 + 8) / 4 = 6 h; without: D 1 h, E 6 h → 3.5 h. Applied: A C D I (4);
hits (an applied article among the fixed links): A (1), I (3); not C (1 did not fix it), not D
→ 2 / 4.

Suggestions shown (kb_suggestions_shown: article, best rank, first shown):

| A | (1, rank 5, h(0.5))                      | shown; 1 fixed it at rank 5 ≤ 5 → hit   |
| B | (1, rank 1, h(20)) = at t_resolved       | shown; 2 fixed it but was not shown     |
| C | (1, rank 1, h(26)), (2, rank 6, h(26))   | shown; 1 did not fix it, 2 at rank 6    |
| D | (3, rank 1, h(40))                       | shown; no link                          |
| I | (3, rank 1, h(4)) after t_resolved h(3)  | not shown before resolution             |
| F | (1, rank 1, h(61)) open · H (1, rank 1, h(-25)) resolved before P: not counted |

kb_shown: A B C D = 4; kb_shown_hits5: A = 1 → hit@5 1/4. Acme (A B E): 2 shown, 1 hit → 1/2;
Borealis (C D I): 2 shown, 0 hits → 0. E1 (A C E): 2 shown, 1 hit.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.kpi import GroupBy, Report, ReportSpec, compute_report, reference_report
from server.kpi.cli import SUMMARY, render
from server.kpi.definitions import KNOWLEDGE
from server.kpi.export import report_csv, report_json
from server.kpi.records import (
    AppliedRecord,
    ArticleRecord,
    CustomerRecord,
    Dataset,
    DeviceRecord,
    IncidentRecord,
    LinkRecord,
    ShownRecord,
    insert_dataset,
    load_dataset,
)

START = datetime(2026, 3, 2, tzinfo=UTC)
END = datetime(2026, 3, 9, tzinfo=UTC)
AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
HOUR = 3600.0


def h(hours: float) -> float:
    return START.timestamp() + hours * HOUR


A, B, C, D, E, F, G, H, I = range(1, 10)  # noqa: E741 - the incidents of the table above


def _incident(key: int, device: str, code: str, detect: float, resolved: float | None) -> IncidentRecord:
    return IncidentRecord(
        id=key,
        device_id=device,
        fault_s=detect,
        detect_s=detect,
        fault_code=code,
        restored_s=resolved,
        resolved_s=resolved,
        channel="remote" if resolved is not None else None,
    )


def dataset() -> Dataset:
    return Dataset(
        customers=[CustomerRecord(1, "Acme"), CustomerRecord(2, "Borealis")],
        devices=[
            DeviceRecord("kb-d1", 1, None, "CT-7", first_seen_s=h(-200)),
            DeviceRecord("kb-d2", 2, None, "MR-2", first_seen_s=h(-200)),
        ],
        incidents=[
            _incident(A, "kb-d1", "E1", h(0), h(2)),
            _incident(B, "kb-d1", "E2", h(10), h(20)),
            _incident(C, "kb-d2", "E1", h(25), h(29)),
            _incident(D, "kb-d2", "E3", h(40), h(41)),
            _incident(E, "kb-d1", "E1", h(50), h(56)),
            _incident(F, "kb-d2", "E1", h(60), None),
            _incident(G, "kb-d1", "E1", h(160), h(170)),
            _incident(H, "kb-d2", "E1", h(-30), h(-20)),
            _incident(I, "kb-d2", "E3", h(-5), h(3)),
        ],
        articles=[ArticleRecord(1, h(-100)), ArticleRecord(2, h(20)), ArticleRecord(3, h(30))],
        links=[
            LinkRecord(1, A),
            LinkRecord(2, B),
            LinkRecord(1, C, fixed=False),
            LinkRecord(2, C),
            LinkRecord(3, I),
            LinkRecord(1, F),
            LinkRecord(1, H),
        ],
        applied=[
            AppliedRecord(A, 1, h(1)),
            AppliedRecord(C, 1, h(26)),
            AppliedRecord(D, 3, h(40.5)),
            AppliedRecord(I, 3, h(1)),
            AppliedRecord(I, 3, h(2)),  # applied twice: one incident
            AppliedRecord(H, 1, h(-25)),
        ],
        shown=[
            ShownRecord(A, 1, 5, h(0.5)),
            ShownRecord(B, 1, 1, h(20)),
            ShownRecord(C, 1, 1, h(26)),
            ShownRecord(C, 2, 6, h(26)),
            ShownRecord(D, 3, 1, h(40)),
            ShownRecord(I, 3, 1, h(4)),
            ShownRecord(F, 1, 1, h(61)),
            ShownRecord(H, 1, 1, h(-25)),
        ],
    )


FLEET: dict[str, Any] = {
    "resolved": 6,
    "kb_linked": 4,
    "kb_link_rate": 4 / 6,
    "kb_links": 5,
    "kb_reused": 3,
    "kb_reuse_rate": 3 / 5,
    "kb_resolve_with_mean_s": (2 + 10 + 4 + 8) / 4 * HOUR,
    "kb_resolve_without_mean_s": (1 + 6) / 2 * HOUR,
    "kb_applied": 4,
    "kb_applied_hits": 2,
    "kb_applied_hit_rate": 0.5,
    "kb_shown": 4,
    "kb_shown_hits5": 1,
    "kb_suggestion_hit5": 1 / 4,
}
BY_CUSTOMER: dict[int, dict[str, Any]] = {
    # Acme: A B E; linked A B; links A→1 (reused), B→2 (not); with (2 + 10) / 2; without E 6 h
    1: {"resolved": 3, "kb_linked": 2, "kb_links": 2, "kb_reused": 1, "kb_reuse_rate": 0.5,
        "kb_resolve_with_mean_s": 6 * HOUR, "kb_resolve_without_mean_s": 6 * HOUR,
        "kb_applied": 1, "kb_applied_hits": 1, "kb_applied_hit_rate": 1.0,
        "kb_shown": 2, "kb_shown_hits5": 1, "kb_suggestion_hit5": 0.5},
    # Borealis: C D I; linked C I; links C→1, C→2 (both reused), I→3 (not); with (4 + 8) / 2;
    # without D 1 h; applied C D I, hit I
    2: {"resolved": 3, "kb_linked": 2, "kb_links": 3, "kb_reused": 2, "kb_reuse_rate": 2 / 3,
        "kb_resolve_with_mean_s": 6 * HOUR, "kb_resolve_without_mean_s": 1 * HOUR,
        "kb_applied": 3, "kb_applied_hits": 1, "kb_applied_hit_rate": 1 / 3,
        "kb_shown": 2, "kb_shown_hits5": 0, "kb_suggestion_hit5": 0.0},
}  # fmt: skip
E1_ROW: dict[str, Any] = {  # A C E: links A→1, C→1, C→2, all reused; without: E
    "resolved": 3,
    "kb_linked": 2,
    "kb_links": 3,
    "kb_reused": 3,
    "kb_reuse_rate": 1.0,
    "kb_resolve_with_mean_s": 3 * HOUR,
    "kb_resolve_without_mean_s": 6 * HOUR,
    "kb_applied": 2,
    "kb_applied_hits": 1,
    "kb_shown": 2,
    "kb_shown_hits5": 1,
}


def check(values: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    for name, want in expected.items():
        assert values[name] == pytest.approx(want, rel=1e-12), (
            f"{where}: {name} = {values[name]}, expected {want}"
        )


def spec(**kw: Any) -> ReportSpec:
    return ReportSpec(START, END, as_of=AS_OF, **kw)


def check_all(fleet: Report, by_customer: Report, by_code: Report) -> None:
    check(fleet.rows[0].values, FLEET, f"{fleet.engine} fleet")
    rows = {row.key: row.values for row in by_customer.rows}
    for key, expected in BY_CUSTOMER.items():
        check(rows[key], expected, f"{by_customer.engine} customer {key}")
    check({row.key: row.values for row in by_code.rows}["E1"], E1_ROW, f"{by_code.engine} E1")


def test_knowledge_measures_reference_engine() -> None:
    ds = dataset()
    check_all(
        reference_report(ds, spec()),
        reference_report(ds, spec(group_by=GroupBy.CUSTOMER)),
        reference_report(ds, spec(group_by=GroupBy.FAULT_CODE)),
    )


async def test_knowledge_measures_sql_engine(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await insert_dataset(session, dataset())
    async with sessions() as session:
        reports = [
            await compute_report(session, spec(**kw))
            for kw in ({}, {"group_by": GroupBy.CUSTOMER}, {"group_by": GroupBy.FAULT_CODE})
        ]
        check_all(*reports)
        loaded = await load_dataset(session)  # the reference engine reads the same rows back
    check_all(
        reference_report(loaded, spec()),
        reference_report(loaded, spec(group_by=GroupBy.CUSTOMER)),
        reference_report(loaded, spec(group_by=GroupBy.FAULT_CODE)),
    )


def test_knowledge_columns_in_json_and_csv() -> None:
    report = reference_report(dataset(), spec(group_by=GroupBy.CUSTOMER))
    body = report_json(report)
    names = [kpi.name for kpi in KNOWLEDGE]
    assert set(names) <= set(body["columns"])
    assert "rank <= 5" in body["definitions"]["kb_shown_hits5"]["definition"]
    assert body["rows"][1]["kpis"]["kb_applied"] == 3
    assert [row["kpis"]["kb_suggestion_hit5"] for row in body["rows"]] == [0.5, 0.0]
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert [row["kb_links"] for row in rows] == ["2", "3"]
    assert float(rows[0]["kb_link_rate"]) == pytest.approx(2 / 3)
    assert rows[1]["kb_reuse_rate"] == repr(2 / 3)
    assert [(row["kb_shown"], row["kb_shown_hits5"], row["kb_suggestion_hit5"]) for row in rows] == [
        ("2", "1", "0.5"),
        ("2", "0", "0.0"),
    ]


def test_knowledge_hit5_in_the_terminal() -> None:
    """Transposed (few rows): every KPI with its label; many rows: hit@5 is a summary column."""
    console = Console(width=200, record=True)
    render(reference_report(dataset(), spec(group_by=GroupBy.CUSTOMER)), console)
    line = next(x for x in console.export_text().splitlines() if "KB suggestion hit@5" in x)
    assert line.split()[-4:] == ["50.00", "%", "0.00", "%"]  # Acme, Borealis
    assert "KB hit@5" in SUMMARY.values()
