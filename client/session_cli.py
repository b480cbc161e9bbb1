"""``fleetcare session``: a technician's remote session from the terminal, over the HTTP API.

    fleetcare session open printer-0042 --incident 17 --reason "paper jam"   # waits for consent
    fleetcare session run ses_… selftest
    fleetcare session run ses_… printer.clear_jam --arg tray=2                 # live output; Ctrl-C cancels
    fleetcare session fetch ses_… /var/log/printer.log -o printer.log
    fleetcare session close ses_… --outcome "jam cleared" --fixed
    fleetcare session report ses_… --markdown -o report.md

``--url`` / ``FLEETCARE_URL`` (the server, e.g. http://127.0.0.1:8080) and ``--token`` /
``FLEETCARE_TOKEN``. Messages go to stderr, results to stdout; an API error prints its message
and exits 1.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from client.api import DEFAULT_URL, Api, Token, Url, say

__all__ = ["app"]

app = typer.Typer(help="Remote sessions from the terminal.", no_args_is_help=True)


def _args(pairs: list[str], args_json: str | None) -> dict[str, Any]:
    args: dict[str, Any] = json.loads(args_json) if args_json else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            say(f"error: --arg {pair!r}: use KEY=VALUE")
            raise typer.Exit(2)
        try:
            args[key] = json.loads(value)  # numbers, booleans, lists
        except ValueError:
            args[key] = value
    return args


@app.command("open")
def open_session(
    device: str,
    *,
    incident: Annotated[int | None, typer.Option(help="The incident this session works on")] = None,
    reason: Annotated[str, typer.Option(help="Why (shown to the local operator)")] = "",
    minutes: Annotated[float | None, typer.Option(help="Time limit (default: the server's)")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not wait for consent / the queue")] = False,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Open a session on DEVICE; print its id; wait until it is active."""
    api = Api(url, token)
    body = {"device_id": device, "incident_id": incident, "reason": reason,
            "time_limit_s": minutes * 60 if minutes else None}  # fmt: skip
    ses = api.call("POST", "/sessions", json=body).json()
    typer.echo(ses["id"])
    started = time.monotonic()
    while not no_wait and ses["state"] in ("requested", "awaiting_consent"):
        waiting = (
            f"queued (position {ses['queue_position']})"
            if ses["state"] == "requested"
            else "waiting for the local operator's consent"
        )
        sys.stderr.write(f"\r{ses['id']}: {waiting} … {time.monotonic() - started:4.0f} s ")
        sys.stderr.flush()
        time.sleep(1)
        ses = api.call("GET", f"/sessions/{ses['id']}").json()
    if not no_wait:
        sys.stderr.write("\n")
    say(f"{ses['id']}: {ses['state']}" + (f" until {ses['expires_at']}" if ses.get("expires_at") else ""))
    if ses["state"] in ("denied", "expired"):
        raise typer.Exit(1)


@app.command()
def run(
    session: str,
    action: str,
    *,
    arg: Annotated[list[str] | None, typer.Option("--arg", help="KEY=VALUE (repeatable)")] = None,
    args_json: Annotated[str | None, typer.Option("--args-json", help="Arguments as a JSON object")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds")] = None,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Run ACTION in SESSION; stream progress and output; end with the result. Ctrl-C offers cancel."""
    api = Api(url, token)
    body = {"action": action, "args": _args(arg or [], args_json), "timeout_s": timeout}
    command = api.call("POST", f"/sessions/{session}/commands", json=body).json()
    say(f"command {command['id']} ({action}) sent")
    _follow(api, command["id"])


def _follow(api: Api, command_id: str) -> dict[str, Any]:
    try:
        for event, data in api.events(command_id):
            if event == "progress":
                say(f"[{(data.get('progress') or 0) * 100:5.1f}%] {data.get('output', '')}".rstrip())
            elif event == "output":
                sys.stdout.write(str(data.get("output", "")))
                sys.stdout.flush()
            elif event in ("result", "error", "rejected"):
                if data.get("output") and event != "result":
                    say(str(data["output"]))
                if data.get("data"):
                    typer.echo(json.dumps(data["data"], indent=2))
            elif event == "end":
                say(f"{data['state']}" + (f": {data['reason']}" if data.get("reason") else ""))
                if data["state"] != "succeeded":
                    raise typer.Exit(1)
                return data
    except KeyboardInterrupt:
        if typer.confirm("\ncancel the command on the device?", default=True, err=True):
            api.call("POST", f"/commands/{command_id}/cancel")
            say(f"cancel sent for {command_id}")
        raise typer.Exit(130) from None
    return {}


@app.command()
def cancel(command: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Ask the device to stop COMMAND."""
    Api(url, token).call("POST", f"/commands/{command}/cancel")
    say(f"cancel sent for {command}")


@app.command()
def consent(session: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Ask the local operator to approve actions that need consent in SESSION."""
    ses = Api(url, token).call("POST", f"/sessions/{session}/consent").json()
    say(f"{ses['id']}: consent requested at {ses['consent_requested_at']}")


@app.command()
def fetch(
    session: str,
    path: str,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the file")],
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Fetch PATH from the device (file.fetch), checked against its sha256."""
    api = Api(url, token)
    command = api.call(
        "POST", f"/sessions/{session}/commands", json={"action": "file.fetch", "args": {"path": path}}
    )
    command_id = command.json()["id"]
    try:
        for event, data in api.events(command_id):
            if event == "progress":
                sys.stderr.write(f"\r{(data.get('progress') or 0) * 100:5.1f}% ")
            elif event == "end":
                sys.stderr.write("\n")
                if data["state"] != "succeeded":
                    say(f"{data['state']}: {data.get('reason') or ''}")
                    raise typer.Exit(1)
                break
    except KeyboardInterrupt:
        api.call("POST", f"/commands/{command_id}/cancel")
        say(f"cancelled {command_id}")
        raise typer.Exit(130) from None
    response = api.call("GET", f"/commands/{command_id}/file")
    output.write_bytes(response.content)
    say(f"{output}: {len(response.content)} bytes, sha256 {response.headers.get('x-content-sha256')}")


@app.command()
def close(
    session: str,
    outcome: Annotated[str, typer.Option(help="What was found and done")],
    fixed: Annotated[bool, typer.Option("--fixed/--not-fixed", help="Did the session fix the fault")] = False,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Close SESSION with an outcome; the report is frozen."""
    ses = (
        Api(url, token)
        .call("POST", f"/sessions/{session}/close", json={"outcome": outcome, "fixed": fixed})
        .json()
    )
    say(f"{ses['id']}: {ses['state']} — report: fleetcare session report {ses['id']} --markdown")


@app.command()
def report(
    session: str,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown instead of JSON")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Print (or write) the session report."""
    params = {"format": "markdown"} if markdown else {}
    response = Api(url, token).call("GET", f"/sessions/{session}/report", params=params)
    text = response.text if markdown else json.dumps(response.json(), indent=2)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text, encoding="utf-8")
        say(f"report written to {output}")


@app.command("list")
def list_sessions(
    device: Annotated[str | None, typer.Option()] = None,
    state: Annotated[str | None, typer.Option()] = None,
    mine: Annotated[str | None, typer.Option("--owner")] = None,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Sessions, newest first."""
    params = {k: v for k, v in {"device": device, "state": state, "owner": mine}.items() if v}
    page = Api(url, token).call("GET", "/sessions", params=params).json()
    for ses in page["items"]:
        typer.echo(
            f"{ses['id']}  {ses['state']:<16} {ses['device_id']:<24} {ses['owner']:<12} {ses['created_at']}  {ses['reason']}"
        )
    say(f"{len(page['items'])} of {page['total']}")
