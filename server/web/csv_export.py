"""The console's list exports as real CSV (RFC 4180 quoting by the standard library's writer, a
header row, ``text/csv``, an attachment): the incident queue, the session list and the
knowledge page export what the page shows, with the same filters, all pages of it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from fastapi import Response

from server.api.download import content_disposition

__all__ = ["EXPORT_LIMIT", "cell", "csv_response"]

_FORMULA = ("=", "+", "-", "@", "\t", "\r")

EXPORT_LIMIT = 10_000
"""Rows at most in one export (the whole filtered list up to that; the page says when cut)."""


def cell(value: object) -> str:
    """One value as CSV text: times in UTC ISO 8601, None empty, booleans true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, list | tuple):
        value = " ".join(str(item) for item in value)
    if isinstance(value, str):
        # a spreadsheet runs a cell that starts like a formula: such text is kept as text
        return "'" + value if value[:1] in _FORMULA else value
    return str(value)


def csv_response(name: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Response:
    """``rows`` under ``header`` as a CSV attachment called ``name``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(value) for value in row])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": content_disposition(name)},
    )
