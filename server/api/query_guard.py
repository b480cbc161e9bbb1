"""An unknown query parameter is a 422, not silently ignored (issue 15).

FastAPI drops query parameters a route does not declare, so ``GET /incidents?state=down`` (the
parameter is ``status``) or ``?format=csv`` answered the whole unfiltered list as JSON — a
person reading it believed the filter had applied. :func:`refuse_unknown_query`, a dependency
of the whole ``/api/v1`` router, compares the request's query parameters with the ones the
route declares (its own and its dependencies') and refuses the first it does not know, naming
it and listing the ones the route accepts.
"""

from __future__ import annotations

import weakref

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

__all__ = ["accepted_query", "refuse_unknown_query"]

_ACCEPTED: dict[int, tuple[weakref.ref[APIRoute], frozenset[str]]] = {}
"""By ``id()`` (a route is not hashable), checked against a weak reference: an id is reused
once its route is freed (an app per test), and a stale entry must not answer for a new route."""


def accepted_query(route: APIRoute) -> frozenset[str]:
    """The query parameter names ``route`` declares (by alias), computed once per route."""
    cached = _ACCEPTED.get(id(route))
    if cached is not None and cached[0]() is route:
        return cached[1]
    known = frozenset(_query_names(route.dependant))
    _ACCEPTED[id(route)] = (weakref.ref(route), known)
    return known


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters of ``dependant`` and of every dependency below it (its ``Dependant``
    fields, which FastAPI has kept stable, rather than its private flattening helpers)."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def refuse_unknown_query(request: Request) -> None:
    """Raise a validation error naming the first query parameter the route does not declare."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    known = accepted_query(route)
    for name in request.query_params:
        if name not in known:
            accepts = ", ".join(sorted(known)) if known else "no query parameters"
            raise RequestValidationError(
                [
                    {
                        "type": "unknown_parameter",
                        "loc": ("query", name),
                        "msg": f"unknown query parameter {name!r}; this endpoint accepts: {accepts}",
                        "input": request.query_params.get(name),
                    }
                ]
            )
