"""``fleetcare session``: a technician's remote session from the terminal, over the HTTP API.

    fleetcare session open printer-0042 --incident 17 --reason "paper jam"   # waits for consent
    fleetcare session run ses_… selftest                                       # the device's text output
    fleetcare session run ses_… printer.clear_jam --arg tray=2                 # live output; Ctrl-C cancels
    fleetcare session run ses_… agent.info --json | jq .                       # the result's data as JSON
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
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from client.api import DEFAULT_URL, Api, Token, Url, say

__all__ = ["app"]

app = typer.Typer(help="Remote sessions from the terminal.", no_args_is_help=True)

FILE_FETCH = "file.fetch"  # its output is the file in base64 chunks: counted, never printed
EXIT_KEYS = ("exit_code", "returncode", "exit_status")  # how an action's data may name an exit code


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
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the result's data as JSON (for scripts), not the text output"),
    ] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Save a file the device returns (file.fetch) here")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Run ACTION in SESSION: the device's text output on stdout as it arrives, progress and a
    final status line (succeeded/failed, exit code, duration) on stderr. Ctrl-C offers cancel."""
    if output is not None and action != FILE_FETCH:
        say(f"error: -o {output}: only file.fetch returns a file ({action} prints its output)")
        raise typer.Exit(2)
    api = Api(url, token)
    body = {"action": action, "args": _args(arg or [], args_json), "timeout_s": timeout}
    command = api.call("POST", f"/sessions/{session}/commands", json=body).json()
    say(f"command {command['id']} ({action}) sent")
    end = _follow(api, command, as_json=as_json)
    if end.get("state") == "succeeded" and action == FILE_FETCH:
        _returned_file(api, command["id"], end.get("data") or {}, output)
    if end.get("state") != "succeeded":
        raise typer.Exit(1)


class _Output:
    """The command's text as the device numbered it (``chunk``), written in order."""

    def __init__(self) -> None:
        self.next = 0
        self.pending: dict[int, str] = {}
        self.seen = False

    def chunk(self, number: int, text: str) -> None:
        self.seen = True
        if number >= self.next:
            self.pending[number] = text
        while self.next in self.pending:
            self.write(self.pending.pop(self.next))
            self.next += 1

    def flush(self) -> None:  # a gap never filled: write what did arrive
        for number in sorted(self.pending):
            self.write(self.pending.pop(number))

    @staticmethod
    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()


def _follow(api: Api, command: dict[str, Any], *, as_json: bool) -> dict[str, Any]:
    """Stream the command: text to stdout (``as_json``: only the result's data, as JSON), the
    rest to stderr; the ``end`` event's data."""
    command_id, fetch = command["id"], command.get("action") == FILE_FETCH
    out, chunks = _Output(), 0
    result: dict[str, Any] = {}
    try:
        for event, data in api.events(command_id):
            if event == "progress":
                say(f"[{(data.get('progress') or 0) * 100:5.1f}%] {data.get('output', '')}".rstrip())
            elif event == "output" and (fetch or as_json):
                chunks += 1
            elif event == "output":
                out.chunk(int(data.get("chunk") or 0), str(data.get("output", "")))
            elif event in ("result", "error", "rejected"):
                result = data
                if event == "result" and not (fetch or as_json):
                    _text(str(data.get("output") or ""), data.get("data") or {}, out)
                elif data.get("output"):
                    say(str(data["output"]))
            elif event == "end":
                out.flush()
                if as_json:
                    typer.echo(json.dumps(result.get("data") or data.get("data") or {}, indent=2))
                say(_status(command, data, result, chunks if fetch else 0))
                return data
    except KeyboardInterrupt:
        if typer.confirm("\ncancel the command on the device?", default=True, err=True):
            api.call("POST", f"/commands/{command_id}/cancel")
            say(f"cancel sent for {command_id}")
        raise typer.Exit(130) from None
    return {}


def _text(text: str, data: dict[str, Any], out: _Output) -> None:
    """The result's text output (after any streamed chunks, on a line of its own); with no
    text at all, the data as ``key: value`` lines — never JSON with escape codes."""
    if text:
        _Output.write(("\n" if out.seen else "") + text + ("" if text.endswith("\n") else "\n"))
    elif not out.seen and data:
        for key, value in _flat(data):
            _Output.write(f"{key}: {value}\n")


def _flat(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            lines += _flat(value, f"{prefix}{key}.")
        elif isinstance(value, str):
            lines.append((f"{prefix}{key}", value))
        else:
            lines.append((f"{prefix}{key}", json.dumps(value)))
    return lines


def _status(command: dict[str, Any], end: dict[str, Any], result: dict[str, Any], chunks: int) -> str:
    """One line: ``selftest failed: Boom · exit code 3 · 1.2 s (command …)`` — the reason, the
    exit code and the file's chunks only when there are any."""
    state = str(end.get("state") or "ended")
    line = f"{command.get('action', 'command')} {state}"
    if end.get("reason"):
        line += f": {end['reason']}"
    data = end.get("data") or result.get("data") or {}
    code = next((data[key] for key in EXIT_KEYS if isinstance(data.get(key), int)), None)
    if code is not None:
        line += f" · exit code {code}"
    if chunks:
        line += f" · {chunks} chunk{'s' if chunks != 1 else ''} received"
    try:
        took = datetime.fromisoformat(end["finished_at"]) - datetime.fromisoformat(command["issued_at"])
        line += f" · {took.total_seconds():.1f} s"
    except (KeyError, TypeError, ValueError):
        pass  # no finish time: no duration
    return line + f" (command {command['id']})"


def _returned_file(api: Api, command_id: str, data: dict[str, Any], output: Path | None) -> None:
    """Say what file the device returned, and save it (``-o``) or say how to fetch it."""
    name = Path(str(data.get("path") or "file")).name
    size = data.get("size")
    about = f"{data.get('path', 'the file')}" + (f", {size:,} bytes" if isinstance(size, int) else "")
    if output is None:
        link = f"{api.base_url}/commands/{command_id}/file"
        say(
            f'the device returned {about}; save it with: curl -H "Authorization: Bearer $FLEETCARE_TOKEN" -o {name} {link}'
        )
        say(f"(or run again with -o {name}; the console's session page has a download link)")
        return
    response = api.call("GET", f"/commands/{command_id}/file")
    output.write_bytes(response.content)
    say(
        f"saved {about} to {output} (sha256 {response.headers.get('x-content-sha256')}, checked by the server)"
    )


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
    end: dict[str, Any] = {}
    try:
        for event, data in api.events(command_id):
            if event == "progress":
                sys.stderr.write(f"\r{(data.get('progress') or 0) * 100:5.1f}% ")
            elif event == "end":
                sys.stderr.write("\n")
                if data["state"] != "succeeded":
                    say(f"{data['state']}: {data.get('reason') or ''}")
                    raise typer.Exit(1)
                end = data
                break
    except KeyboardInterrupt:
        api.call("POST", f"/commands/{command_id}/cancel")
        say(f"cancelled {command_id}")
        raise typer.Exit(130) from None
    _returned_file(api, command_id, end.get("data") or {"path": path}, output)


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
