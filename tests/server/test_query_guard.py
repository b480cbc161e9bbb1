"""An unknown query parameter is a 422 naming it (issue 15, item 8): ``/incidents?state=down``
(the parameter is ``status``) and ``?format=csv`` answered the unfiltered list as JSON before."""

from __future__ import annotations

from fastapi import routing
from fastapi.routing import APIRoute

from server.api.query_guard import accepted_query
from server.app import create_app
from server.db.models import Role
from tests.support.server import V1, api_client, bearer, create_token, server_settings


async def test_unknown_query_parameters_are_refused_naming_them(db_url: str) -> None:
    async with api_client(server_settings(db_url)) as (client, runtime):
        token = await create_token(runtime, "olga", Role.OPS)
        for query, name in (
            ("state=down", "state"),
            ("format=csv", "format"),
            ("status=open&limt=5", "limt"),
        ):
            answer = await client.get(f"{V1}/incidents?{query}", headers=bearer(token))
            assert answer.status_code == 422, (query, answer.text)
            error = answer.json()["error"]
            assert error["field"] == name
            assert error["message"].startswith(f"{name}: unknown query parameter")
            assert "status" in error["message"]  # the parameters the route accepts are listed
        known = await client.get(f"{V1}/incidents?status=open&limit=5&open_only=true", headers=bearer(token))
        assert known.status_code == 200, known.text
        assert (await client.get(f"{V1}/devices?verbose=1", headers=bearer(token))).status_code == 422
        assert (await client.get(f"{V1}/health", headers=bearer(token))).status_code == 200


def test_each_route_accepts_the_query_parameters_its_openapi_declares(tmp_path: object) -> None:
    """The guard reads the same declarations as the API's schema: no documented parameter is refused."""
    app = create_app(server_settings("sqlite+aiosqlite:///:memory:"))
    schema = app.openapi()
    checked = 0
    for context in routing.iter_route_contexts(app.routes):  # through included routers
        route = context.route
        if not isinstance(route, APIRoute) or not context.path.startswith(V1) or not route.include_in_schema:
            continue
        for method in context.methods or ():
            operation = schema["paths"][context.path].get(method.lower())
            if operation is None:
                continue
            documented = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            assert documented == set(accepted_query(route)), (method, context.path)
            checked += 1
    assert checked > 50
