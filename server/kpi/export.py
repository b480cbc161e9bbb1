"""A report as JSON, CSV or human-readable values; times given by people, parsed."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

from server.errors import InvalidInput
from server.kpi.definitions import COLUMNS, DEFINITIONS, GROUP_COLUMNS, definitions_dict
from server.kpi.report import Report

__all__ = ["MAX_PERIOD_DAYS", "check_period", "human", "parse_time", "report_csv", "report_json"]

MAX_PERIOD_DAYS = 3660


def parse_time(value: str, name: str) -> datetime:
    """``2026-01-01`` (midnight UTC), ``2026-01-01T08:00:00Z`` or with an offset; a time
    without a zone is UTC. Errors name the parameter."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidInput(
            f"{name}: {value!r} is not a date or time (use 2026-01-01 or 2026-01-01T08:00:00Z)", field=name
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def check_period(start: datetime, end: datetime) -> None:
    if start >= end:
        raise InvalidInput(f"from ({start.isoformat()}) must be before to ({end.isoformat()})", field="from")
    if (end - start).days > MAX_PERIOD_DAYS:
        raise InvalidInput(f"to: the period may be at most {MAX_PERIOD_DAYS} days long", field="to")


def report_json(report: Report, *, definitions: bool = True) -> dict[str, Any]:
    body = report.as_dict()
    body["columns"] = [kpi.name for kpi in COLUMNS]
    if definitions:
        body["definitions"] = definitions_dict()
    return body


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def report_csv(report: Report) -> str:
    """One line per row: the group columns, then every KPI column (empty for no value)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*GROUP_COLUMNS, *(kpi.name for kpi in COLUMNS)])
    for row in report.as_dict()["rows"]:
        group = row["group"]
        writer.writerow(
            [
                _cell(group["by"]),
                _cell(group["key"]),
                group["label"],
                row["from"],
                row["to"],
                *(_cell(row["kpis"][kpi.name]) for kpi in COLUMNS),
            ]
        )
    return out.getvalue()


def _duration(seconds: float, compact: bool) -> str:
    sep = "" if compact else " "
    if seconds < 60:
        return f"{seconds:.0f}{sep}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}{sep}{'m' if compact else 'min'}"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f}{sep}h"
    return f"{seconds / 86400:.1f}{sep}d"


def human(name: str, value: Any, values: dict[str, Any] | None = None, *, compact: bool = False) -> str:
    """A KPI value for people: percentages, durations, "> 12.0 d" for a censored MTBF."""
    if name == "mtbf_s" and value is None and values and values.get("mtbf_censored"):
        bound = values.get("mtbf_lower_bound_s")
        return f">{'' if compact else ' '}{_duration(bound, compact)}" if bound is not None else "—"
    unit = DEFINITIONS[name].unit if name in DEFINITIONS else ""
    if value is None or isinstance(value, bool):
        return {None: "—", True: "yes", False: "no"}[value]
    formats = {
        "ratio": lambda v: f"{100 * v:.1f}%" if compact else f"{100 * v:.2f} %",
        "seconds": lambda v: _duration(float(v), compact),
        "money": lambda v: f"{v:,.2f}",
    }
    if unit in formats:
        return formats[unit](value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.3f}"
