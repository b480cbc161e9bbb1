"""The remote session console's pieces that are not pages: the device's action catalogue as
forms (one input per argument, generated from the action's ``args_schema``), and the submitted
form back into typed ``args``.

The form carries only client hints (required, min/max, maxLength, choices); the values are
converted and checked here with the agent's own checker (``agent.actions.args.check_args``, the
same subset of JSON Schema the device enforces), so a bad value is refused before anything is
signed and the message names the argument.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import protocol
from protocol.args import check_args
from server.commands.files import FILE_FETCH
from server.db.models import CommandState
from server.errors import Conflict, InvalidInput

if TYPE_CHECKING:
    from server.api.sessions import SessionPublic
    from server.commands.service import CommandService

__all__ = [
    "ARG_PREFIX",
    "ActionForm",
    "ArgField",
    "FetchedFileInfo",
    "action_forms",
    "arg_fields",
    "fetched_files",
    "file_size",
    "parse_args",
    "session_blocker",
]

ARG_PREFIX = "arg."
"""Form field names of arguments: ``arg.<name>`` (keeps them apart from csrf/action)."""

_INPUTS = {"string": "text", "integer": "number", "number": "number"}


@dataclass(frozen=True, slots=True)
class ArgField:
    """One input of an action's form."""

    name: str
    label: str
    kind: str  # text | number | bool | enum | json
    required: bool
    description: str = ""
    choices: list[str] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)  # min / max / step / maxlength

    @property
    def input_name(self) -> str:
        return ARG_PREFIX + self.name


@dataclass(frozen=True, slots=True)
class ActionForm:
    """One action of the catalogue with its form and whether it may run now (and why not)."""

    name: str
    description: str
    policy: str
    disruptive: bool
    timeout: float
    windows: list[str]
    fields: list[ArgField]
    blocked: str | None  # why the run button is disabled; None: it may run


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def arg_fields(schema: Mapping[str, Any]) -> list[ArgField]:
    """The inputs for an ``args_schema`` (required ones first, then by name)."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    out = []
    for name in sorted(properties, key=lambda n: (n not in required, n)):
        spec = properties[name] if isinstance(properties[name], Mapping) else {}
        kind_of = spec.get("type")
        attrs: dict[str, str] = {}
        choices: list[str] = []
        if "enum" in spec:
            kind = "enum"
            choices = [json.dumps(v) if not isinstance(v, str) else v for v in spec["enum"]]
        elif kind_of == "boolean":
            kind = "bool"
        elif kind_of in _INPUTS:
            kind = _INPUTS[kind_of]
            if kind_of == "integer":
                attrs["step"] = "1"
            elif kind_of == "number":
                attrs["step"] = "any"
            for key, attr in (("minimum", "min"), ("maximum", "max"), ("maxLength", "maxlength")):
                if key in spec:
                    attrs[attr] = str(spec[key])
        else:
            kind = "json"  # arrays, objects, untyped: JSON text
        out.append(
            ArgField(
                name=name,
                label=str(spec.get("title") or _label(name)),
                kind=kind,
                required=name in required,
                description=str(spec.get("description") or ""),
                choices=choices,
                attrs=attrs,
            )
        )
    return out


def session_blocker(remote: SessionPublic, principal_name: str, is_admin: bool, now: datetime) -> str | None:
    """Why no command can be sent in this session right now (None: commands may be sent)."""
    if not is_admin and principal_name != remote.owner:
        return f"only the session's owner ({remote.owner}) or an admin sends commands"
    if remote.state != "active":
        return f"the session is {remote.state.replace('_', ' ')}"
    if remote.expires_at is not None and remote.expires_at <= now:
        return "the session reached its time limit"
    return None


def action_forms(
    inventory: Mapping[str, Any] | None, *, session_blocked: str | None, consent_given: bool
) -> list[ActionForm]:
    """The device's advertised catalogue (``inventory.agent.catalogue``) as forms: what the
    owner allows first, then what needs consent, forbidden last; by name within each."""
    agent = (inventory or {}).get("agent") or {}
    forms = []
    for entry in agent.get("catalogue") or []:
        if not isinstance(entry, Mapping) or "name" not in entry:
            continue
        policy = str(entry.get("policy") or protocol.PolicyDecision.ALLOWED.value)
        blocked = session_blocked
        if policy == protocol.PolicyDecision.FORBIDDEN.value:
            blocked = "the owner's policy forbids this action on this device"
        elif blocked is None and policy == protocol.PolicyDecision.NEEDS_CONSENT.value and not consent_given:
            blocked = "needs the local operator's consent: request it first"
        forms.append(
            ActionForm(
                name=str(entry["name"]),
                description=str(entry.get("description") or ""),
                policy=policy,
                disruptive=bool(entry.get("disruptive", False)),
                timeout=float(entry.get("timeout") or 0),
                windows=[str(w) for w in entry.get("windows") or []],
                fields=arg_fields(entry.get("args_schema") or {}),
                blocked=blocked,
            )
        )
    order = {protocol.PolicyDecision.ALLOWED.value: 0, protocol.PolicyDecision.NEEDS_CONSENT.value: 1}
    return sorted(forms, key=lambda form: (order.get(form.policy, 2), form.name))


def _boolean(raw: str) -> bool:
    if raw not in ("true", "false"):
        raise ValueError(raw)
    return raw == "true"


_CONVERTERS: dict[str, Any] = {"boolean": _boolean, "integer": int, "number": float, "string": str}
_EXPECTED = {"boolean": "true or false", "integer": "a whole number", "number": "a number"}


def _convert(name: str, raw: str, spec: Mapping[str, Any]) -> Any:
    """One form value as its schema type (an enum value as the choice it stands for)."""
    if "enum" in spec:
        for choice in spec["enum"]:
            if raw == (choice if isinstance(choice, str) else json.dumps(choice)):
                return choice
        return raw  # check_args names the allowed values
    kind = str(spec.get("type"))
    try:
        return _CONVERTERS.get(kind, json.loads)(raw)
    except ValueError:
        where = f"args.{name}"
        raise InvalidInput(f"{where}: {raw!r} is not {_EXPECTED.get(kind, 'JSON')}", field=where) from None


def parse_args(form: Mapping[str, str], schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``arg.*`` fields of a submitted form as typed ``args`` for ``schema``. An empty field
    is left out (the action's default); :class:`InvalidInput` names the first bad argument."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    args: dict[str, Any] = {}
    for key, raw in form.items():
        if not key.startswith(ARG_PREFIX) or raw == "":
            continue
        name = key[len(ARG_PREFIX) :]
        spec = properties.get(name)
        args[name] = _convert(name, raw, spec if isinstance(spec, Mapping) else {})
    problems = check_args(args, schema)
    if problems:
        name = problems[0].split(":", 1)[0]
        raise InvalidInput(f"args.{problems[0]}", field=f"args.{name}")
    return args


# --- files brought back by file.fetch -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchedFileInfo:
    """A ``file.fetch`` command's file as the session page shows it: what the download will
    hold, or why there is no download (``problem``: the service's own 409 message)."""

    command_id: str
    name: str | None = None
    size: int | None = None
    sha256: str | None = None
    problem: str | None = None


async def fetched_files(
    commands: CommandService, listed: list[Mapping[str, Any]]
) -> dict[str, FetchedFileInfo]:
    """Per succeeded ``file.fetch`` of a session (the report's ``commands``), the file checked
    exactly as the download will be: ``CommandService.fetch_file`` (the service behind ``GET
    /api/v1/commands/{id}/file``) re-assembles the chunks and checks size and sha256, so a link
    is offered only for a file that will download intact. Costs one decode per file and page
    view (files are at most ``policy.max_fetch_bytes``, 64 MiB by default)."""
    out = {}
    for command in listed:
        if command.get("action") != FILE_FETCH or command.get("state") != CommandState.SUCCEEDED.value:
            continue
        command_id = str(command["id"])
        try:
            fetched = await commands.fetch_file(command_id)
        except Conflict as exc:
            out[command_id] = FetchedFileInfo(command_id, problem=exc.message)
        else:
            out[command_id] = FetchedFileInfo(command_id, fetched.name, len(fetched.content), fetched.sha256)
    return out


def file_size(size: int) -> str:
    """Bytes for people: "12.5 KiB (12,800 bytes)"; exact bytes alone below 1 KiB."""
    if size < 1024:
        return f"{size:,} bytes"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit} ({size:,} bytes)"
        value /= 1024
    return f"{value:.1f} GiB ({size:,} bytes)"
