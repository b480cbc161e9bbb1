"""The paging every console list shares (fleet, incident queue, sessions, knowledge, audit):
the page number read from the query string, the number of pages, and links that keep the
list's filters while changing one of them — so a filter survives paging, sorting and a bulk
action's return to the list."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from server.errors import InvalidInput

__all__ = ["PAGE_SIZE", "Paging", "page_number"]

PAGE_SIZE = 50
"""Rows per page of every console list."""


def page_number(params: Mapping[str, str]) -> int:
    """The ``page`` of a query string (1 when absent; 422 naming ``page`` when not a number)."""
    value = params.get("page") or ""
    if not value:
        return 1
    try:
        return max(1, int(value))
    except ValueError:
        raise InvalidInput(f"page: {value!r} is not a number", field="page") from None


@dataclass(frozen=True, slots=True)
class Paging:
    """The page of a list asked for by the query string ``params`` (its filters, sort and page)."""

    params: Mapping[str, str]
    size: int = PAGE_SIZE
    filters: dict[str, str] = field(init=False)
    page: int = field(init=False)

    def __post_init__(self) -> None:
        # every non-empty parameter but the page itself: the list's filters, sort and order
        object.__setattr__(self, "filters", {k: v for k, v in self.params.items() if v and k != "page"})
        object.__setattr__(self, "page", page_number(self.params))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def query(self) -> str:
        """The filters as a query string (no ``?``), e.g. for an export link or a form's return."""
        return urlencode(self.filters)

    def export(self, path: str) -> str:
        """``path`` (an export such as ``/incidents.csv``) with the list's filters."""
        return f"{path}?{self.query}" if self.query else path

    def link(self, **changes: object) -> str:
        """``?query`` with ``changes`` applied (an empty value drops the parameter)."""
        merged = {**self.filters, **{k: str(v) for k, v in changes.items()}}
        kept = {k: v for k, v in merged.items() if v}
        return "?" + urlencode(kept) if kept else "?"

    def context(self, total: int) -> dict[str, object]:
        """What a list template's pager needs: ``page``, ``pages``, ``total``, ``link``, ``query``."""
        return {
            "page": self.page,
            "pages": max(1, -(-total // self.size)),
            "total": total,
            "link": self.link,
            "query": self.query,
        }
