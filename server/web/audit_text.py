"""Audit entries as sentences a person reads: "tina acknowledged incident #12 (note: on my way)",
"ada sent `printer.clear_jam` to dev-00012 in session ses_…".

Pure functions, no HTML: an entry becomes a :class:`Sentence`, a tuple of :class:`Part` (text,
optionally a link or code) that the template writes out, escaping every part (autoescape), and
the entry's full detail as ``key: value`` :attr:`Sentence.facts` for the auditor.

:data:`PHRASES` holds one phrase per action the server writes (tests/web/test_readable.py
finds them in the source and fails on one without a phrase); any other action reads as a short
``key: value`` list. A phrase is a template (or a function of the entry choosing one):

* ``{name}`` or ``{name:arg}``: a field of :data:`FIELDS` (``{actor}``, ``{incident}``,
  ``{command}`` …), else the detail's value of that key, shortened;
* ``{name|text}``: ``text`` when the field is empty;
* ``[ … ]``: an optional segment, left out when a field in it is empty.

Links: a device → ``/devices/{id}``, an incident → ``/incidents/{id}``, a session →
``/sessions/{id}``, a command → its row on its session's page when its session is known (from
the detail, or ``sessions``: command id → session id, which the page looks up).
:mod:`server.web.timeline_text` phrases the incident timeline with the same templates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from server.web.rendering import duration, when

__all__ = [
    "FIELDS",
    "PHRASES",
    "Entry",
    "Part",
    "Phrase",
    "Sentence",
    "command_ids",
    "describe",
    "facts",
    "render",
    "sentence_of",
]


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of a sentence: ``text``, a link when ``href`` is set, code when ``code``."""

    text: str
    href: str | None = None
    code: bool = False


Piece = Part | str | None | list["Piece"]
"""What a field gives: parts, plain text, nested lists; ``None`` (or ``""``) is empty."""


@dataclass(frozen=True, slots=True)
class Sentence:
    parts: tuple[Part, ...]
    facts: tuple[tuple[str, str], ...]  # the full detail, flattened, for the auditor
    phrased: bool  # False: the action has no phrase (or its detail did not fit it)


@dataclass(frozen=True, slots=True)
class Entry:
    """What a phrase reads. ``here``: the reference the page itself shows (``incident:12`` on the
    incident's page), named "this incident" rather than linked."""

    actor: str
    action: str
    target: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    result: str = "ok"
    here: str | None = None
    sessions: Mapping[str, str] = field(default_factory=dict)
    device_id: str = ""  # the device the page is about, when neither target nor detail names one

    def text(self, key: str) -> str:
        value = self.detail.get(key)
        return "" if value is None else str(value)

    def ref_id(self, kind: str) -> str:
        """The id of the ``kind`` the entry is about: its target ``kind:id``, else
        ``detail[kind_id]``."""
        prefix, _, rest = (self.target or "").partition(":")
        if prefix == kind and rest:
            return rest
        return self.text(f"{kind}_id") or (self.device_id if kind == "device" else "")


Phrase = str | Callable[[Entry], str]

# --- the words ---------------------------------------------------------------------------------

ACTORS = {
    "server": "The server",
    "anonymous": "Someone",
    "cli": "The command line",
    "demo": "The demo",
    "kpi": "The generated history",
    "system:broker-access": "The broker access sync",
}
CHANNELS = {"auto": "by itself", "customer": "by the customer", "remote": "remotely", "field": "in the field"}
OUTCOMES = {
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "was cancelled",
    "timed_out": "timed out",
    "expired": "expired before the device took it",
    "rejected": "was rejected",
}
SHORT = 80  # characters of a free text (a note, a reason) in a sentence


def clip(value: Any, limit: int = SHORT) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def who(actor: str) -> Piece:
    kind, _, name = actor.partition(":")
    if actor in ACTORS or not name:
        return ACTORS.get(actor, actor)
    return {"user": name, "device": device(name)}.get(kind, actor)


def device(device_id: str) -> Piece:
    return Part(device_id, f"/devices/{device_id}") if device_id else None


def incident(e: Entry, incident_id: str = "") -> Piece:
    iid = incident_id or e.ref_id("incident")
    if not iid:
        return None
    return "this incident" if e.here == f"incident:{iid}" else Part(f"incident #{iid}", f"/incidents/{iid}")


def session(e: Entry, word: str = "session") -> Piece:
    sid = e.text("session_id") or e.sessions.get(e.text("command_id"), "")
    return [f"{word} ", Part(sid, f"/sessions/{sid}")] if sid else None


def command_part(e: Entry, command_id: str, text: str, session_id: str = "") -> Part:
    """``text`` in code, linked to the command's row on its session's page if that is known."""
    sid = session_id or e.sessions.get(command_id, "")
    return Part(text, f"/sessions/{sid}#cmd-{command_id}" if sid and command_id else None, code=True)


def command(e: Entry) -> Piece:
    """The entry's command as its action (else its id)."""
    cid, name = e.text("command_id"), e.text("action")
    if not (cid or name):
        return None
    part = command_part(e, cid, name or cid, e.text("session_id"))
    return part if name else ["command ", part]


def numbered(word: str, value: Any) -> str | None:
    return f"{word} #{value}" if value not in (None, "") else None


_NUMBERED = {"quarantine": "quarantined message"}


def target(e: Entry) -> Piece:
    """The target named for people: ``device:x`` → a link, ``user:ada`` → ada, ``site:3`` →
    site #3; the page's own ``here`` → this …."""
    kind, _, ident = (e.target or "").partition(":")
    if not ident or e.here == e.target:
        return f"this {kind}" if e.here == e.target and kind else e.target
    named: dict[str, Callable[[], Piece]] = {
        "device": lambda: device(ident),
        "incident": lambda: incident(e, ident),
        "user": lambda: ident,
    }
    return named.get(kind, lambda: numbered(_NUMBERED.get(kind, kind), ident))()


def value_text(value: Any) -> str:
    """A value as the auditor reads it: text as it is, everything else as JSON would spell it."""
    if isinstance(value, str):
        return value or "(empty)"
    return when(value) if isinstance(value, datetime) else json.dumps(value, ensure_ascii=False, default=str)


def facts(detail: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """The detail flattened to ``key: value`` pairs (``args.tray: 2``, a list of plain values
    joined by commas), never JSON braces."""
    out: list[tuple[str, str]] = []
    for key, value in detail.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(facts(value, f"{name}.") if value else [(name, "(none)")])
        elif isinstance(value, list | tuple) and any(isinstance(v, Mapping | list | tuple) for v in value):
            out.extend(facts({f"[{n}]": item for n, item in enumerate(value)}, name))
        elif isinstance(value, list | tuple):
            out.append((name, ", ".join(value_text(v) for v in value) if value else "(none)"))
        else:
            out.append((name, value_text(value)))
    return out


def pairs(e: Entry, skip: Iterable[str] = (), limit: int = 6) -> str | None:
    """A short ``key: value, …`` list of the detail (``skip``: keys left out, and unset ones)."""
    left_out = set(skip)
    said = {k: v for k, v in e.detail.items() if v is not None and k not in left_out}
    shown = facts(said)
    text = ", ".join(f"{k}: {clip(v, 60)}" for k, v in shown[:limit])
    return (text + (", …" if len(shown) > limit else "")) or None


def extras(e: Entry, keys: Iterable[str]) -> str | None:
    """`` (note: …; reason: …)`` for the keys that are set."""
    said = [f"{key.replace('_', ' ')}: {clip(e.detail[key])}" for key in keys if e.detail.get(key)]
    return f" ({'; '.join(said)})" if said else None


def moment(value: Any) -> str | None:
    if not value:
        return None
    try:
        return when(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return str(value)


def count(value: Any, word: str) -> str | None:
    n = len(value) if isinstance(value, list | tuple) else value
    return f"{n} {word}{'' if n == 1 else 's'}" if isinstance(n, int) and n else None


def choice(value: Any, options: str) -> str | None:
    yes, _, no = options.partition("/")
    return None if value is None else (yes if value else no) or None


def _args(e: Entry) -> Piece:
    args = e.detail.get("args")
    if not isinstance(args, Mapping) or not args:
        return None
    return Part(", ".join(f"{k}={value_text(v)}" for k, v in args.items()), code=True)


def _evidence(e: Entry) -> Piece:
    ids = [c for c in e.detail.get("evidence") or () if isinstance(c, str)]
    listed: list[Piece] = [[", " if n else "", command_part(e, cid, cid)] for n, cid in enumerate(ids)]
    return [f"command{'s' if len(ids) > 1 else ''} ", listed] if ids else None


def _listing(value: Any) -> str | None:
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) and value else None


def _numbers(value: Any, word: str) -> str | None:
    """``article #4`` or ``articles #4, #7``."""
    if not isinstance(value, list | tuple) or not value:
        return None
    return f"{word}{'s' if len(value) > 1 else ''} " + ", ".join(f"#{v}" for v in value)


FIELDS: dict[str, Callable[[Entry, str], Piece]] = {
    "actor": lambda e, _: who(e.actor),
    "incident": lambda e, _: incident(e),
    "other_incident": lambda e, _: incident(e, e.text("incident_id")),
    "device": lambda e, _: device(e.ref_id("device")),
    "session": lambda e, word: session(e, word or "session"),
    "command": lambda e, _: command(e),
    "target": lambda e, _: target(e),
    "target_name": lambda e, _: (e.target or "").partition(":")[2] or None,
    "article": lambda e, _: numbered("article", e.ref_id("article")),
    "when": lambda e, key: moment(e.detail.get(key)),
    "notes": lambda e, keys: extras(e, keys.split(",")),
    "listed": lambda e, skip: pairs(e, skip.split(",")),
    "count": lambda e, spec: count(e.detail.get(spec.split(":")[0]), spec.split(":")[1]),
    "choice": lambda e, spec: choice(e.detail.get(spec.split(":")[0]), spec.partition(":")[2]),
    "list": lambda e, key: _listing(e.detail.get(key)),
    "numbers": lambda e, spec: _numbers(e.detail.get(spec.split(":")[0]), spec.split(":")[1]),
    "code": lambda e, key: Part(e.text(key), code=True) if e.text(key) else None,
    "long": lambda e, key: clip(e.text(key), 160) or None,
    "ordinal": lambda e, key: str(int(e.detail[key]) + 1),
    "duration": lambda e, key: duration(float(e.detail[key])) if e.detail.get(key) is not None else None,
    "minutes": lambda e, key: f"{float(e.detail[key]) / 60:g} min" if e.detail.get(key) else None,
    "ended": lambda e, _: OUTCOMES.get(e.result, f"ended {e.result}"),
    "channel": lambda e, _: (
        CHANNELS.get(e.text("channel"), f"via {e.text('channel')}") if e.text("channel") else None
    ),
    "args": lambda e, _: _args(e),
    "evidence": lambda e, _: _evidence(e),
}

# --- the phrases -------------------------------------------------------------------------------

_REOPENED = "{actor} reopened {incident}[ ({reason})][, reopen #{reopened}]"
_RECURRED = "{actor} reopened {incident} (the fault came back[: {list:codes}])[, reopen #{reopened}]"
_LOGIN = {
    "ok": "{target_name} signed in[ from {source}]",
    "denied": "A sign-in as “{target_name}” was refused (unknown user or wrong password)[ from {source}]",
    "disabled": "{target_name} tried to sign in, but the account is disabled[ from {source}]",
}

PHRASES: dict[str, Phrase] = {
    # incidents (target: the incident; detail: device_id and what was said)
    "incident.acknowledged": "{actor} acknowledged {incident}{notes:note}",
    "incident.assigned": "{actor} assigned {incident} to {user|someone}{notes:note}",
    "incident.dispatched": "{actor} dispatched {engineer|a field engineer} to {incident}"
    "[ (on site from {when:onsite_at})]{notes:note}",
    "incident.guidance": "{actor} gave the customer guidance on {incident}[: “{steps}”]",
    "incident.resolved": "{actor} resolved {incident} {channel}[ after {count:visits:visit}]"
    "[ with {evidence}]{notes:cause,resolution}",
    "incident.reopened": lambda e: _RECURRED if e.detail.get("reason") == "fault.recurred" else _REOPENED,
    "incident.closed": "{actor} closed {incident}",
    "incident.updated": "{actor} updated {incident}[: {listed:device_id}]",
    # remote sessions (target: the device; detail: session_id, from/to, …)
    "session.requested": "{actor} opened {session} on {device}[ for “{reason}”][, time limit {minutes:time_limit_s}]",
    "session.consent.requested": "{actor} asked the local operator of {device} for consent in {session}",
    "session.consent.pending": "{device} shows the consent request of {session} to its local operator",
    "session.consent.ignored": "An answer ({event|consent}) from {device} came after {session} had ended: ignored",
    "session.consent.granted": "{approved_by|The local operator} approved {session} on {device}"
    "[ until {when:expires_at}]",
    "session.consent.denied": "{denied_by|The local operator} refused {session} on {device}{notes:reason}",
    "session.activated": "{session:Session} on {device} became active[ (approved by {approved_by})]",
    "session.closed": "{actor} closed {session} on {device}[: “{outcome}”][ ({choice:fixed:fixed/not fixed})]",
    "session.expired": "{session:Session} on {device} expired[: {why}]",
    # commands (target: the device)
    "command.sent": "{actor} sent {command}[ with {args}] to {device}[ in {session}]",
    "command.refused": "{actor} was refused {command} on {device}[ in {session}][: {long:why}]",
    "command.cancel_requested": "{actor} asked {device} to cancel {command}[ in {session}]",
    "command.finished": "The command {command} on {device} {ended}[ (sent by {issuer})][ in {session}]",
    "command.rejected": "{device} rejected {command}[ in {session}][: {reason}]",
    # devices, customers, sites
    "device.revoked": lambda e: (
        "{actor} marked {device} revoked, from the PKI's revocation list"
        if e.detail.get("source") == "certs"
        else "{actor} revoked {device}{notes:reason}"
    ),
    "device.updated": "{actor} updated {device}[: {listed:}]",
    "device.site_matched": "{actor} gave {device} to site #{site_id} of customer #{customer_id}"
    "[ (it reported “{reported}”)]",
    "customer.created": "{actor} created customer “{name}” ({target})[: {listed:name}]",
    "customer.updated": "{actor} updated {target}[: {listed:}]",
    "site.created": "{actor} created site “{name}” ({target}) for customer #{customer_id}"
    "[: {listed:name,customer_id}]",
    "site.updated": "{actor} updated {target}[: {listed:}]",
    # people, sign-in, tokens (target: user:<name> or token:<id>)
    "user.created": "{actor} created user {target} ({role|no role}[, customer #{customer_id}]"
    "[, {choice:password:/no password yet}])",
    "user.password_set": "{actor} set the password of {target}",
    "user.disabled": "{actor} disabled {target}[ and revoked {count:token_ids:token}]",
    "user.assigned": "{actor} assigned {target} to customer “{customer}”{notes:reason}",
    "user.unassigned": "{actor} took {target} off customer “{customer}”",
    "token.created": "{actor} issued token #{token_id} for {target}[ via {via}][, valid until {when:expires_at}]",
    "token.revoked": lambda e: (
        "{actor} revoked {count:token_ids:token} of {target}"
        if (e.target or "").startswith("user:")
        else "{actor} revoked {target}"
    ),
    "auth.login": lambda e: _LOGIN.get(e.result, _LOGIN["ok"] + " ({result})"),
    # the rest: ingest, rules, guides, the knowledge base
    "ingest.quarantine_replayed": "{actor} replayed {target}[ ({topic}, seq {seq})]: {outcome}",
    "rule.created": "{actor} created rule “{name}”: {code:condition}[ on {model}][, {severity}]",
    "rule.updated": "{actor} changed rule “{name}”[ (changed {list:changed})]: {code:condition}[ on {model}]"
    "[, {choice:enabled:enabled/disabled}]",
    "rule.deleted": "{actor} deleted rule “{name}” ({code:condition}[ on {model}])",
    "guide.created": "{actor} wrote {target} for fault {code:fault_code}[ on {model}]"
    "[ ({choice:customer_safe:customer-safe/})]",
    "guide.started": "{actor} started guide #{guide_id}[ “{title}”] on {incident}",
    "guide.finished": "{actor} finished guide run #{run_id} on {incident}"
    "[: {choice:fixed:it fixed the fault/it did not fix the fault}]",
    "article.created": "{actor} drafted {article}[ “{title}”]",
    "article.updated": "{actor} edited {article}[ ({list:fields})]",
    "article.published": "{actor} published {article}",
    "article.retired": "{actor} retired {article}{notes:reason}",
    "article.applied": "{actor} applied {article} to {incident}[: sent {command}]",
    "article.linked": "{actor} resolved {incident} with {article}"
    "[ ({choice:fixed:its fix worked/its fix did not hold})]",
    "article.drafted": "{actor} drafted {article} from {incident}",
}

_FALLBACK = "{actor} · {code:_action}[ · {target}][ — {listed:_action,_result}][ → {_result}]"

# --- putting it together -----------------------------------------------------------------------

_REGION = re.compile(r"\[([^\]]*)\]|([^\[]+)")
_FIELD = re.compile(r"\{([^}]*)\}")


def _field(e: Entry, spec: str) -> Piece:
    name, _, arg = spec.partition(":")
    if name in FIELDS:
        return FIELDS[name](e, arg)
    return clip(e.text(name)) or None


def _empty(piece: Piece) -> bool:
    return piece is None or piece == "" or (isinstance(piece, list) and all(_empty(p) for p in piece))


def flatten(piece: Piece, out: list[Part]) -> None:
    if isinstance(piece, list):
        for item in piece:
            flatten(item, out)
    elif isinstance(piece, Part):
        out.append(piece)
    elif piece:
        if out and out[-1].href is None and not out[-1].code:
            out[-1] = Part(out[-1].text + piece)  # neighbouring text joins
        else:
            out.append(Part(piece))


def render(template: str, e: Entry) -> list[Part]:
    """``template`` filled from ``e`` (see the module's docstring for the syntax)."""
    out: list[Part] = []
    for region in _REGION.finditer(template):
        optional = region.group(1) is not None
        text = region.group(1) if optional else region.group(2)
        pieces: list[Piece] = []
        complete, at = True, 0
        for found in _FIELD.finditer(text):
            spec, _, default = found.group(1).partition("|")
            value = _field(e, spec)
            if _empty(value):
                complete, value = complete and bool(default), default or None
            pieces += [text[at : found.start()], value]
            at = found.end()
        if complete or not optional:
            flatten([*pieces, text[at:]], out)
    return out


def describe(e: Entry, phrases: Mapping[str, Phrase] = PHRASES) -> Sentence:
    """The sentence for ``e``: its action's phrase, else (or when the detail does not fit the
    phrase, as an old entry's may not) the ``key: value`` fallback."""
    found = phrases.get(e.action)
    try:
        parts = render(found if isinstance(found, str) else found(e), e) if found is not None else None
    except (KeyError, TypeError, ValueError, AttributeError):
        parts = None
    if parts is not None:
        return Sentence(tuple(parts), tuple(facts(e.detail)), True)
    extra = {"_action": e.action, "_result": "" if e.result in ("ok", "") else e.result}
    own = replace(e, detail={**e.detail, **extra})
    return Sentence(tuple(render(_FALLBACK, own)), tuple(facts(e.detail)), False)


def sentence_of(row: Any, sessions: Mapping[str, str] | None = None) -> Sentence:
    """An audit row (``AuditEntry``, or anything with its ``actor``, ``action``, ``target``,
    ``detail`` and ``result``) as a sentence; its facts start with the target and the result."""
    entry = Entry(row.actor, row.action, row.target, row.detail or {}, row.result, sessions=sessions or {})
    said = describe(entry)
    return Sentence(
        said.parts, (("target", row.target or "—"), ("result", row.result), *said.facts), said.phrased
    )


def command_ids(details: Iterable[Mapping[str, Any]]) -> set[str]:
    """Commands named in ``details`` (``command_id``, ``cancel_command_id``, ``evidence``) whose
    session the detail does not say: the page looks them up for :func:`command`'s links."""
    found: set[str] = set()
    for detail in details:
        if detail.get("session_id"):
            continue
        found.update(detail[k] for k in ("command_id", "cancel_command_id") if isinstance(detail.get(k), str))
        found.update(c for c in detail.get("evidence") or () if isinstance(c, str))
    return found
