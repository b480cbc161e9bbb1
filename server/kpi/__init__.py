"""Downtime and service KPIs (shared/KPIS.md, docs/kpis.md).

    spec = ReportSpec(start, end, group_by=GroupBy.CUSTOMER)
    report = await compute_report(session, spec)          # SQL does the work
    report = reference_report(await load_dataset(session), spec)   # the same, in Python

Modules: ``intervals`` (union/clip arithmetic), ``calendar`` (buckets, contract hours),
``definitions`` (every KPI's text), ``report`` (spec, rows, final formulas), ``reference``
(the reference engine), ``records`` (load/insert), ``generate`` (a synthetic fleet), ``export``
(JSON/CSV), ``cli`` (``fleetcare kpi``). The SQL engine: ``query`` (``compute_report``, its
phases in order), ``report_context`` (what the phases share), ``prepare``, ``state_time``,
``state_rolled``, ``state_sql``, ``incident_months``, ``incident_figures``, ``percentiles``,
``knowledge_figures`` (the phases, by concept) and ``sql`` (temporary tables, dialects).
"""

from server.kpi.definitions import COLUMNS, DEFINITIONS, Kpi, definitions_dict
from server.kpi.query import compute_report
from server.kpi.records import Dataset, load_dataset
from server.kpi.reference import reference_report
from server.kpi.report import GroupBy, KpiRow, Report, ReportSpec

__all__ = [
    "COLUMNS",
    "DEFINITIONS",
    "Dataset",
    "GroupBy",
    "Kpi",
    "KpiRow",
    "Report",
    "ReportSpec",
    "compute_report",
    "definitions_dict",
    "load_dataset",
    "reference_report",
]
