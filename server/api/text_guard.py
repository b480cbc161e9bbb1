"""No NUL character gets past the API edge (issue 13).

PostgreSQL text and JSONB cannot hold U+0000: a NUL in any string that reaches a query — a
name, a search term, a path segment, a key deep inside a command's ``args`` — was a
``DataError`` and a 500 (SQLite stores it, so only one backend failed). No field of this API
has a use for it, so :func:`refuse_nul`, a dependency of the whole ``/api/v1`` router, refuses
it in path and query parameters and anywhere in a JSON body, as a 422 naming the field.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

__all__ = ["NUL_MESSAGE", "refuse_nul"]

NUL_MESSAGE = "NUL characters (U+0000) are not accepted"
_ESCAPED_NUL = b"\\u0000"  # how JSON writes U+0000 (a raw one is invalid JSON)

Location = tuple[str | int, ...]


async def refuse_nul(request: Request) -> None:
    """Raise a validation error at the first NUL in the request's path, query or JSON body."""
    for name, value in request.path_params.items():
        if "\x00" in str(value):
            _refuse(("path", name))
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            _refuse(("query", name.replace("\x00", "")))
    if _is_json(request) and _ESCAPED_NUL in await request.body():  # cheap test before the walk
        try:
            body = await request.json()
        except ValueError:  # not JSON: a route with a body answers json_invalid, one without ignores it
            return
        where = _find_nul(body, ("body",))
        if where is not None:
            _refuse(where)


def _is_json(request: Request) -> bool:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _find_nul(value: Any, where: Location) -> Location | None:
    """The location of the first string (or object key) holding a NUL; None when there is none."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return where
            found = _find_nul(item, (*where, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_nul(item, (*where, index))
            if found is not None:
                return found
    return None


def _refuse(where: Location) -> None:
    raise RequestValidationError([{"type": "string_nul", "loc": where, "msg": NUL_MESSAGE, "input": None}])
