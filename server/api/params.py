"""The bounded integer types every API parameter and request field uses (issue 13).

An unbounded ``int`` lets a request carry any integer: past 2^63 the database driver raises
``OverflowError`` (SQLite) and past 2^31 PostgreSQL refuses it for an ``INTEGER`` column
("integer out of range", SQLAlchemy binds ``::INTEGER``) — a 500 either way, after the request
was authenticated and a transaction opened. These types refuse such a value at the edge, as a
422 naming the field, and write the bound into the OpenAPI document
(tests/server/test_openapi_bounds.py fails for any integer parameter without both bounds).

Use them as the base type and add what the route needs on top; FastAPI merges the metadata::

    IncidentId = Annotated[Id, Path(description="Incident id")]
    offset: Annotated[Count, Query()] = 0
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

__all__ = ["MAX_INT", "MAX_SEQ", "Count", "Id", "Seq"]

# PostgreSQL INTEGER, the type of every id column the API takes (customers, sites, incidents,
# rules, guides, articles, users) and of what SQLAlchemy binds OFFSET as. Exactly representable
# as a float, so the OpenAPI document (FastAPI writes bounds as floats) states it exactly.
MAX_INT = 2**31 - 1
# A device's sequence numbers are 0…2^63-1 (protocol.messages); replies' ``device_seq``.
MAX_SEQ = 2**63 - 1

Id = Annotated[int, Field(ge=1, le=MAX_INT)]
"""A row id: 1…2^31-1."""

Count = Annotated[int, Field(ge=0, le=MAX_INT)]
"""An offset, an index or a count: 0…2^31-1."""

Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]
"""A device sequence number (``Last-Event-ID``): 0…2^63-1."""
