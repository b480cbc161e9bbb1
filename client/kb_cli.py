"""``fleetcare kb``: the knowledge base from the terminal, over the HTTP API.

    fleetcare kb search "paper jam tray 2"          # articles and past incidents
    fleetcare kb suggest 17                         # ranked articles for incident 17, with why
    fleetcare kb show 4                             # one article
    fleetcare kb apply 17 4 --session ses_…         # send article 4's remote action

``--url`` / ``FLEETCARE_URL`` and ``--token`` / ``FLEETCARE_TOKEN`` as for ``fleetcare session``;
``--json`` prints the API's answer as it is. An API error prints its message and exits 1.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from client.api import DEFAULT_URL, Api, Token, Url

__all__ = ["app"]

app = typer.Typer(help="The knowledge base: search, suggestions, articles.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer")]


def _dump(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@app.command()
def search(
    query: Annotated[list[str], typer.Argument(help="Words to look for")],
    *,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Search published articles and resolved incidents; best match first."""
    hits = (
        Api(url, token).call("GET", "/knowledge/search", params={"q": " ".join(query), "limit": limit}).json()
    )
    if as_json:
        _dump(hits)
        return
    if not hits:
        typer.echo("no match", err=True)
        return
    for hit in hits:
        codes = f" [{', '.join(hit['fault_codes'])}]" if hit["fault_codes"] else ""
        typer.echo(f"{hit['score']:.2f}  {hit['kind']:<8} {hit['id']:>6}  {hit['title']}{codes}")
        if hit["snippet"]:
            typer.echo(f"{'':27}{hit['snippet']}")


@app.command()
def suggest(
    incident: int,
    *,
    limit: Annotated[int, typer.Option(min=1, max=50)] = 5,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Ranked articles for INCIDENT, each with why it was chosen and its first remote action."""
    found = Api(url, token).call("GET", f"/incidents/{incident}/suggestions", params={"limit": limit}).json()
    if as_json:
        _dump(found)
        return
    if not found:
        typer.echo("no suggestion", err=True)
    for rank, item in enumerate(found, 1):
        typer.echo(f"{rank}. article {item['article_id']}: {item['title']}  (score {item['score']:.3f})")
        typer.echo(f"   why: {item['why']}")
        if item["actions"]:
            first = item["actions"][0]
            args = " ".join(f"{k}={json.dumps(v)}" for k, v in (first.get("args") or {}).items())
            typer.echo(f"   remote action: {first['action']} {args}".rstrip())


@app.command()
def show(
    article: int,
    *,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """One article."""
    item = Api(url, token).call("GET", f"/knowledge/articles/{article}").json()
    if as_json:
        _dump(item)
        return
    typer.echo(f"#{item['id']} {item['title']}  ({item['type']}, {item['state']})")
    env = ", ".join(item["models"]) or "any model"
    typer.echo(f"environment: {env}; fault codes {', '.join(item['fault_codes']) or '-'}")
    for label in ("symptom", "cause", "resolution"):
        if item[label]:
            typer.echo(f"{label}:\n  " + item[label].replace("\n", "\n  "))
    for action in item["actions"]:
        typer.echo(f"remote action: {action['action']} {json.dumps(action.get('args') or {})}")
    typer.echo(f"used {item['use_count']}x, fixed {item['success_count']}x, applied {item['apply_count']}x")


@app.command()
def apply(
    incident: int,
    article: int,
    *,
    session: Annotated[str, typer.Option("--session", help="Your active session on the device")],
    action_index: Annotated[int, typer.Option(min=0, help="Which action of the article")] = 0,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Send ARTICLE's remote action into SESSION for INCIDENT; print the command id.
    Follow it with 'fleetcare session run' output or GET /commands/{id}/stream."""
    body = {"session_id": session, "action_index": action_index}
    command = (
        Api(url, token).call("POST", f"/incidents/{incident}/suggestions/{article}/apply", json=body).json()
    )
    typer.echo(command["id"])
    typer.echo(f"{command['action']} sent ({command['state']})", err=True)
