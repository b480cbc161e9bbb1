"""Readable everywhere (issue 15, item 4): the audit log and the incident timeline as sentences
with links, never raw JSON. The phrase tables must cover every audit action and timeline kind
the server writes — found here in the source, through the calls of ``server.base.audit.record``
and ``server.base.timeline.note`` (a name passed through a wrapper's parameter is followed to
the wrapper's callers) — and each reads as its sample below says."""

from __future__ import annotations

import ast
import html as html_lib
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest

from certs import PkiDir
from server.base import audit
from server.db.models import Device
from server.web.audit_text import PHRASES, Entry, Part, describe, sentence_of
from server.web.timeline_text import TIMELINE, timeline_sentence
from tests.support.server import api_client, server_settings
from tests.web.seed import seed
from tests.web.support import Console, open_incident, sign_in

ROOT = Path(__file__).resolve().parents[2]
Scope = ast.FunctionDef | ast.AsyncFunctionDef | None

# --- what the source writes --------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The server's modules, parsed: who calls what, and which strings reach an argument."""

    modules: dict[str, ast.Module]

    @classmethod
    def read(cls) -> Source:
        found = {}
        for path in sorted((ROOT / "server").rglob("*.py")):
            if "migrations" not in path.parts:
                name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                found[name] = ast.parse(path.read_text(encoding="utf-8"))
        return cls(found)

    def imports(self, module: str) -> dict[str, str]:
        """Local name → ``package.module`` (a module) or ``package.module:name`` (a name in it)."""
        out = {}
        for node in ast.walk(self.modules[module]):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    out[alias.asname or alias.name] = (
                        full if full in self.modules else f"{node.module}:{alias.name}"
                    )
            elif isinstance(node, ast.Import):
                out.update({alias.asname or alias.name: alias.name for alias in node.names})
        return out

    def calls(self, module: str, function: str) -> Iterator[tuple[str, Scope, ast.Call]]:
        """Every call of ``module.function``: the calling module, its function, the call."""
        for name, tree in self.modules.items():
            imports = self.imports(name)
            for scope, call in _calls(tree, None):
                f = call.func
                if isinstance(f, ast.Name) and f.id == function:
                    if name == module or imports.get(f.id) == f"{module}:{function}":
                        yield name, scope, call
                elif (
                    isinstance(f, ast.Attribute)
                    and f.attr == function
                    and isinstance(f.value, ast.Name)
                    and imports.get(f.value.id) == module
                ):
                    yield name, scope, call

    def written(self, module: str, function: str, position: int, keyword: str) -> set[str]:
        """The strings passed to ``module.function`` as its argument ``keyword`` (or at ``position``)."""
        sites = list(self.calls(module, function))
        assert sites, f"no call of {module}.{function}: a wrapper called some other way?"
        names: set[str] = set()
        for where, scope, call in sites:
            arg = next((k.value for k in call.keywords if k.arg == keyword), None)
            if arg is None and len(call.args) > position:
                arg = call.args[position]
            assert arg is not None, f"{where}:{call.lineno}: {function}() without {keyword}"
            names |= self.resolve(arg, where, scope)
        return names

    def resolve(self, expr: ast.expr, module: str, scope: Scope) -> set[str]:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {expr.value}
        if isinstance(expr, ast.JoinedStr):
            out = {""}
            for part in expr.values:
                if isinstance(part, ast.FormattedValue):
                    out = {o + value for o in out for value in self.resolve(part.value, module, scope)}
                else:
                    out = {o + str(ast.literal_eval(part)) for o in out}
            return out
        if isinstance(expr, ast.Name):
            return self.values(expr.id, module, scope, expr.lineno)
        raise AssertionError(f"{module}:{expr.lineno}: cannot tell the name {ast.unparse(expr)} writes")

    def values(self, name: str, module: str, scope: Scope, line: int) -> set[str]:
        """The strings ``name`` may hold: a parameter (then its callers'), an assignment in the
        function or the module, or a constant imported from another module."""
        if scope is not None:
            params = [a.arg for a in (*scope.args.posonlyargs, *scope.args.args)]
            if name in params or name in [a.arg for a in scope.args.kwonlyargs]:
                return self.written(module, scope.name, params.index(name) if name in params else 999, name)
            if assigned := _assigned(list(ast.walk(scope)), name):
                return set().union(*(self.resolve(v, module, scope) for v in assigned))
        if assigned := _assigned(self.modules[module].body, name):
            return set().union(*(self.resolve(v, module, None) for v in assigned))
        origin, _, original = self.imports(module).get(name, "").partition(":")
        if original and origin in self.modules:
            return self.values(original, origin, None, line)
        raise AssertionError(f"{module}:{line}: cannot tell the values of {name}")


def _calls(node: ast.AST, scope: Scope) -> Iterator[tuple[Scope, ast.Call]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Call):
            yield scope, child
        yield from _calls(
            child, child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else scope
        )


def _assigned(statements: list[ast.AST] | list[ast.stmt], name: str) -> list[ast.expr]:
    out: list[ast.expr] = []
    for stmt in statements:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    out.append(stmt.value)
                elif isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Tuple):
                    out += [
                        v
                        for t, v in zip(target.elts, stmt.value.elts, strict=True)
                        if isinstance(t, ast.Name) and t.id == name
                    ]
    return out


@cache
def audit_actions() -> frozenset[str]:
    return frozenset(Source.read().written("server.base.audit", "record", 99, "action"))


@cache
def timeline_kinds() -> frozenset[str]:
    return frozenset(Source.read().written("server.base.timeline", "note", 2, "kind"))


# --- the samples: input, and the sentence it reads as -------------------------------------------

SES = "ses_AbCdEf012345"
# two lines a sample: ``action | actor | target | result | detail (JSON)``, then ``= the sentence``
AUDIT_TABLE = """
incident.acknowledged | user:tina | incident:12 | ok | {"device_id": "dev-1", "note": "on my way"}
= tina acknowledged incident #12 (note: on my way)
incident.assigned | user:tina | incident:12 | ok | {"device_id": "dev-1", "user": "tina"}
= tina assigned incident #12 to tina
incident.dispatched | user:olga | incident:12 | ok | {"device_id": "dev-1", "engineer": "sam", "onsite_at": "2026-03-01T09:30:00+00:00"}
= olga dispatched sam to incident #12 (on site from 2026-03-01 09:30 UTC)
incident.guidance | user:tina | incident:12 | ok | {"device_id": "dev-1"}
= tina gave the customer guidance on incident #12
incident.resolved | user:tina | incident:12 | ok | {"device_id": "dev-1", "channel": "remote", "visits": 0}
= tina resolved incident #12 remotely
incident.reopened | user:olga | incident:12 | ok | {"device_id": "dev-1", "reason": "jams again"}
= olga reopened incident #12 (jams again)
incident.closed | user:olga | incident:12 | ok | {"device_id": "dev-1"}
= olga closed incident #12
incident.updated | user:olga | incident:12 | ok | {"device_id": "dev-1", "priority": 1}
= olga updated incident #12: priority: 1
session.requested | user:tina | device:dev-1 | ok | {"session_id": "ses_AbCdEf012345", "from": null, "to": "requested", "reason": "jam", "time_limit_s": 1800}
= tina opened session ses_AbCdEf012345 on dev-1 for “jam”, time limit 30 min
session.consent.requested | server | device:dev-1 | ok | {"session_id": "ses_AbCdEf012345", "from": "requested", "to": "awaiting_consent"}
= The server asked the local operator of dev-1 for consent in session ses_AbCdEf012345
session.consent.pending | device:dev-1 | device:dev-1 | ok | {"session_id": "ses_AbCdEf012345"}
= dev-1 shows the consent request of session ses_AbCdEf012345 to its local operator
session.consent.ignored | device:dev-1 | device:dev-1 | ok | {"session_id": "ses_AbCdEf012345", "event": "consent.granted"}
= An answer (consent.granted) from dev-1 came after session ses_AbCdEf012345 had ended: ignored
session.consent.granted | device:dev-1 | device:dev-1 | ok | {"session_id": "ses_AbCdEf012345", "approved_by": "Nurse Joy", "expires_at": "2026-03-01T10:00:00+00:00"}
= Nurse Joy approved session ses_AbCdEf012345 on dev-1 until 2026-03-01 10:00 UTC
session.consent.denied | device:dev-1 | device:dev-1 | ok | {"session_id": "ses_AbCdEf012345", "denied_by": "Nurse Joy", "reason": "patient on the table"}
= Nurse Joy refused session ses_AbCdEf012345 on dev-1 (reason: patient on the table)
session.activated | server | device:dev-1 | ok | {"session_id": "ses_AbCdEf012345", "from": "requested", "to": "active"}
= Session ses_AbCdEf012345 on dev-1 became active
session.closed | user:tina | device:dev-1 | ok | {"session_id": "ses_AbCdEf012345", "outcome": "jam cleared", "fixed": true}
= tina closed session ses_AbCdEf012345 on dev-1: “jam cleared” (fixed)
session.expired | server | device:dev-1 | ok | {"session_id": "ses_AbCdEf012345", "why": "time limit reached"}
= Session ses_AbCdEf012345 on dev-1 expired: time limit reached
command.sent | user:ada | device:dev-00012 | recorded | {"command_id": "cmd_1", "action": "printer.clear_jam", "args": {"tray": 2}, "issuer": "ada", "session_id": "ses_AbCdEf012345"}
= ada sent printer.clear_jam with tray=2 to dev-00012 in session ses_AbCdEf012345
command.refused | user:tina | device:dev-1 | forbidden | {"action": "system.reboot", "args": {}, "session_id": "ses_AbCdEf012345", "why": "system.reboot needs consent"}
= tina was refused system.reboot on dev-1 in session ses_AbCdEf012345: system.reboot needs consent
command.cancel_requested | user:tina | device:dev-1 | sent | {"command_id": "cmd_1", "cancel_command_id": "cmd_2", "action": "logs.tail"}
= tina asked dev-1 to cancel logs.tail in session ses_X
command.finished | device:dev-1 | device:dev-1 | succeeded | {"command_id": "cmd_1", "action": "selftest", "issuer": "tina", "session_id": "ses_AbCdEf012345"}
= The command selftest on dev-1 succeeded (sent by tina) in session ses_AbCdEf012345
command.rejected | device:dev-1 | device:dev-1 | rejected | {"command_id": "cmd_1", "reason": "expired", "issuer": "tina"}
= dev-1 rejected command cmd_1 in session ses_X: expired
device.revoked | user:ada | device:dev-1 | ok | {"reason": "stolen"}
= ada revoked dev-1 (reason: stolen)
device.updated | user:ada | device:dev-1 | ok | {"customer_id": 3, "site_id": 7}
= ada updated dev-1: customer_id: 3, site_id: 7
device.site_matched | server | device:dev-1 | ok | {"reported": "Acme/HQ", "customer_id": 3, "site_id": 7, "by": "qualified name"}
= The server gave dev-1 to site #7 of customer #3 (it reported “Acme/HQ”)
customer.created | user:ada | customer:3 | ok | {"name": "Acme", "criticality": "high", "cost_per_dispatch": 120.0}
= ada created customer “Acme” (customer #3): criticality: high, cost_per_dispatch: 120.0
customer.updated | user:ada | customer:3 | ok | {"contract_hours": "24/7"}
= ada updated customer #3: contract_hours: 24/7
site.created | user:ada | site:7 | ok | {"customer_id": 3, "name": "HQ", "criticality": null, "attended": true}
= ada created site “HQ” (site #7) for customer #3: attended: true
site.updated | user:ada | site:7 | ok | {"attended": false}
= ada updated site #7: attended: false
user.created | cli | user:tina | ok | {"role": "technician", "password": true}
= The command line created user tina (technician)
user.password_set | cli | user:tina | ok | {}
= The command line set the password of tina
user.disabled | user:ada | user:tina | ok | {"token_ids": [4, 5]}
= ada disabled tina and revoked 2 tokens
user.assigned | user:ada | user:tina | ok | {"customer_id": 3, "customer": "Acme"}
= ada assigned tina to customer “Acme”
user.unassigned | user:ada | user:tina | ok | {"customer_id": 3, "customer": "Acme"}
= ada took tina off customer “Acme”
token.created | user:tina | user:tina | ok | {"token_id": 9, "expires_at": null, "via": "login"}
= tina issued token #9 for tina via login
token.revoked | user:ada | token:9 | ok | {}
= ada revoked token #9
auth.login | user:tina | user:tina | ok | {"source": "127.0.0.1"}
= tina signed in from 127.0.0.1
ingest.quarantine_replayed | cli | quarantine:5 | ok | {"topic": "fleet/dev-1/telemetry", "seq": 41, "outcome": "stored", "error": "bad"}
= The command line replayed quarantined message #5 (fleet/dev-1/telemetry, seq 41): stored
rule.created | user:olga | rule:2 | ok | {"name": "hot fuser", "condition": "fuser_c > 230 for 60s", "model": "LX-9", "severity": "warning", "enabled": true}
= olga created rule “hot fuser”: fuser_c > 230 for 60s on LX-9, warning
rule.updated | user:olga | rule:2 | ok | {"changed": ["value"], "name": "hot fuser", "condition": "fuser_c > 240 for 60s", "model": null, "severity": "warning", "enabled": true}
= olga changed rule “hot fuser” (changed value): fuser_c > 240 for 60s, enabled
rule.deleted | user:olga | rule:2 | ok | {"name": "hot fuser", "condition": "fuser_c > 240 for 60s", "model": null, "severity": "warning", "enabled": true}
= olga deleted rule “hot fuser” (fuser_c > 240 for 60s)
guide.created | user:olga | guide:4 | ok | {"fault_code": "E-104", "model": "LX-9", "customer_safe": true}
= olga wrote guide #4 for fault E-104 on LX-9 (customer-safe)
guide.started | user:carl | incident:12 | ok | {"guide_id": 4, "run_id": 8}
= carl started guide #4 on incident #12
guide.finished | user:carl | incident:12 | ok | {"run_id": 8, "fixed": true}
= carl finished guide run #8 on incident #12: it fixed the fault
article.created | user:tina | article:5 | ok | {"title": "Clear a tray 2 jam"}
= tina drafted article #5 “Clear a tray 2 jam”
article.updated | user:tina | article:5 | ok | {"fields": ["cause", "title"]}
= tina edited article #5 (cause, title)
article.published | user:olga | article:5 | ok | {}
= olga published article #5
article.retired | user:olga | article:5 | ok | {"reason": "model gone"}
= olga retired article #5 (reason: model gone)
article.applied | user:tina | article:5 | ok | {"incident_id": 12, "command_id": "cmd_1", "action": "printer.clear_jam"}
= tina applied article #5 to incident #12: sent printer.clear_jam
article.linked | user:tina | article:5 | ok | {"incident_id": 12, "fixed": true}
= tina resolved incident #12 with article #5 (its fix worked)
article.drafted | user:tina | article:6 | ok | {"incident_id": 12, "fixed": true}
= tina drafted article #6 from incident #12
"""
# ``kind | actor | detail (JSON)``, then ``= the sentence`` (incident #12 of dev-1, on its page)
TIMELINE_TABLE = """
opened | server | {"incident_kind": "fault", "codes": ["E-104"], "effect": "down", "severity": "error", "priority": 2, "t_fault": "2026-03-01T08:00:00+00:00"}
= The server opened this incident: fault E-104 — the device is down, error, P2 (since 2026-03-01 08:00 UTC)
fault.joined | server | {"code": "E-221"}
= Fault E-221 joined this incident
fault.recurred | server | {"codes": ["E-104"]}
= The fault came back (E-104)
escalated | server | {"effect": "down", "severity": "critical"}
= Escalated: the device is now down (critical)
restored | server | {}
= dev-1 recovered
repeat.of | server | {"incident_id": 9, "codes": ["E-104"], "after_restore_s": 7200.0}
= This incident repeats the failure of incident #9, 2 h after its restore (E-104)
repeated | server | {"incident_id": 15, "codes": ["E-104"], "after_restore_s": 90}
= incident #15 repeated the failure of this incident, 1.5 min after the restore (E-104)
restore.withdrawn | server | {}
= Later data withdrew the recovery of dev-1: the fault was still there
rebuilt | server | {"reason": "late data", "t_restored": "2026-03-01T09:00:00+00:00"}
= The server rebuilt the times of this incident from late data, restored 2026-03-01 09:00 UTC
reopened | server | {"reason": "fault.recurred", "reopened": 2, "codes": ["E-104"]}
= The server reopened this incident (the fault came back: E-104), reopen #2
resolution.withdrawn | server | {"reason": "late data"}
= The server withdrew the automatic resolution of this incident (late data)
resolved | server | {"channel": "auto", "evidence": [], "guide_runs": [], "t_restored": "2026-03-01T09:00:00+00:00"}
= The server resolved this incident by itself
acknowledged | user:tina | {"note": "on my way"}
= tina acknowledged this incident (note: on my way)
assigned | user:tina | {"user": "tina", "note": ""}
= tina assigned this incident to tina
dispatched | user:olga | {"engineer": "sam", "note": "bring rollers"}
= olga dispatched sam to this incident (note: bring rollers)
onsite | user:olga | {"engineer": "sam", "visit": 1}
= sam was on site (visit 1)
guidance | user:tina | {"steps": "open tray 2, pull the sheet"}
= tina gave the customer guidance on this incident: “open tray 2, pull the sheet”
closed | user:olga | {}
= olga closed this incident
updated | user:olga | {"priority": 1}
= olga updated this incident: priority: 1
command | user:tina | {"command_id": "cmd_1", "action": "printer.clear_jam"}
= tina sent printer.clear_jam to dev-1 in session ses_X
session.opened | user:tina | {"session_id": "ses_AbCdEf012345", "reason": "jam"}
= tina opened session ses_AbCdEf012345 on dev-1 for “jam”
session.activated | server | {"session_id": "ses_AbCdEf012345"}
= Session ses_AbCdEf012345 on dev-1 became active
session.closed | user:tina | {"session_id": "ses_AbCdEf012345", "state": "closed", "outcome": "jam cleared", "fixed": true}
= tina closed session ses_AbCdEf012345 on dev-1: “jam cleared” (fixed)
session.expired | server | {"session_id": "ses_AbCdEf012345", "state": "expired", "why": "no consent in time"}
= Session ses_AbCdEf012345 on dev-1 expired: no consent in time
session.consent.denied | device:dev-1 | {"session_id": "ses_AbCdEf012345", "state": "denied", "denied_by": "Nurse Joy", "reason": "busy"}
= Nurse Joy refused session ses_AbCdEf012345 on dev-1 (reason: busy)
guide.started | user:carl | {"guide_id": 4, "run_id": 8, "title": "Clear a jam"}
= carl started guide #4 “Clear a jam” on this incident
guide.step | user:carl | {"run_id": 8, "step": 0, "result": "done", "note": ""}
= carl did step 1 of guide run #8: done
guide.finished | user:carl | {"run_id": 8, "fixed": false}
= carl finished guide run #8 on this incident: it did not fix the fault
knowledge.linked | user:tina | {"article_id": 5, "fixed": true}
= tina resolved this incident with article #5 (its fix worked)
knowledge.drafted | user:tina | {"article_id": 6, "fixed": true}
= tina drafted article #6 from this incident
knowledge.unfixed | user:olga | {"article_ids": [5, 6]}
= Articles #5, #6 did not fix this incident after all
knowledge.applied | user:tina | {"article_id": 5, "command_id": "cmd_1", "action": "printer.clear_jam"}
= tina applied article #5 to this incident: sent printer.clear_jam
"""


def _samples(table: str, fields: int) -> dict[str, tuple[list[str], dict[str, object], str]]:
    lines = table.strip().splitlines()
    out = {}
    for head, said in zip(lines[::2], lines[1::2], strict=True):
        *names, detail = head.split(" | ", fields - 1)
        out[names[0]] = (names[1:], json.loads(detail), said.removeprefix("= "))
    return out


AUDIT_SAMPLES = _samples(AUDIT_TABLE, 5)
TIMELINE_SAMPLES = _samples(TIMELINE_TABLE, 3)
SESSIONS = {"cmd_1": "ses_X"}  # command → session, as the page looks it up


def text(parts: tuple[Part, ...]) -> str:
    return "".join(p.text for p in parts)


def test_every_audit_action_the_server_writes_has_a_phrase_and_a_sample() -> None:
    found = audit_actions()
    assert len(found) > 40  # the scan reached the wrappers (incident, session, article …)
    assert not found - set(PHRASES), (
        f"audit actions without a phrase in server/web/audit_text.py: {sorted(found - set(PHRASES))}"
    )
    assert not found - set(AUDIT_SAMPLES), f"add a sample below for: {sorted(found - set(AUDIT_SAMPLES))}"


def test_every_timeline_kind_the_server_writes_has_a_phrase_and_a_sample() -> None:
    found = timeline_kinds()
    assert {"opened", "acknowledged", "session.opened", "knowledge.linked"} <= found
    assert not found - set(TIMELINE), (
        f"timeline kinds without a phrase in server/web/timeline_text.py: {sorted(found - set(TIMELINE))}"
    )
    assert not found - set(TIMELINE_SAMPLES), (
        f"add a sample below for: {sorted(found - set(TIMELINE_SAMPLES))}"
    )


@pytest.mark.parametrize("action", sorted(AUDIT_SAMPLES))
def test_an_audit_action_reads_as_a_sentence(action: str) -> None:
    (actor, target, result), detail, expected = AUDIT_SAMPLES[action]
    said = describe(Entry(actor, action, target, detail, result, sessions=SESSIONS))
    assert said.phrased
    assert text(said.parts) == expected
    bare = describe(Entry(actor, action, target, {}, result))  # an old entry, its detail gone
    assert "{" not in text(bare.parts)
    assert "[" not in text(bare.parts)


@pytest.mark.parametrize("kind", sorted(TIMELINE_SAMPLES))
def test_a_timeline_kind_reads_as_a_sentence(kind: str) -> None:
    (actor,), detail, expected = TIMELINE_SAMPLES[kind]
    entry = SimpleNamespace(kind=kind, actor=actor, detail=detail)
    said = timeline_sentence(12, "dev-1", entry, SESSIONS)
    assert said.phrased
    assert text(said.parts) == expected


def test_sentences_link_what_they_name() -> None:
    links = {
        p.text: p.href
        for p in describe(
            Entry("user:ada", "command.sent", "device:dev-00012", AUDIT_SAMPLES["command.sent"][1])
        ).parts
        if p.href
    }
    assert links == {
        "printer.clear_jam": f"/sessions/{SES}#cmd-cmd_1",  # the command's row on its session's page
        "dev-00012": "/devices/dev-00012",
        SES: f"/sessions/{SES}",
    }
    acked = describe(Entry("user:tina", "incident.acknowledged", "incident:12", {"note": "on my way"}))
    assert [(p.text, p.href) for p in acked.parts] == [
        ("tina acknowledged ", None),
        ("incident #12", "/incidents/12"),
        (" (note: on my way)", None),
    ]
    tail = describe(
        Entry("device:dev-1", "command.rejected", "device:dev-1", {"command_id": "cmd_1"}, sessions=SESSIONS)
    )
    assert {p.text: p.href for p in tail.parts if p.href} == {
        "dev-1": "/devices/dev-1",
        "cmd_1": "/sessions/ses_X#cmd-cmd_1",
        "ses_X": "/sessions/ses_X",
    }
    here = timeline_sentence(
        12,
        "dev-1",
        SimpleNamespace(kind="command", actor="user:tina", detail={"command_id": "cmd_1", "action": "ping"}),
        SESSIONS,
        session_links=False,
    )
    assert {p.text: p.href for p in here.parts if p.href} == {
        "dev-1": "/devices/dev-1"
    }  # sessions named, not linked


def test_an_action_without_a_phrase_reads_as_key_value_text() -> None:
    said = describe(
        Entry(
            "user:ada",
            "widget.frobbed",
            "device:dev-1",
            {"color": "red", "size": {"w": 3, "h": None}, "tags": ["a", "b"]},
            "denied",
        )
    )
    assert not said.phrased
    assert (
        text(said.parts)
        == "ada · widget.frobbed · dev-1 — color: red, size.w: 3, size.h: null, tags: a, b → denied"
    )
    assert said.facts == (("color", "red"), ("size.w", "3"), ("size.h", "null"), ("tags", "a, b"))
    odd = describe(Entry("user:ada", "guide.step", None, {"steps": [{"n": 1}, {"n": 2}]}))
    assert odd.facts == (("steps[0].n", "1"), ("steps[1].n", "2"))
    broken = timeline_sentence(
        1, "d", SimpleNamespace(kind="guide.step", actor="user:carl", detail={"step": "first"})
    )
    assert not broken.phrased  # a detail the phrase cannot read falls back, it does not fail the page
    assert text(broken.parts) == "carl · guide.step · this incident — step: first"


def test_an_audit_row_keeps_its_target_and_result_among_the_facts() -> None:
    row = SimpleNamespace(
        actor="user:tina",
        action="incident.closed",
        target="incident:3",
        detail={"device_id": "d"},
        result="ok",
    )
    said = sentence_of(row)
    assert text(said.parts) == "tina closed incident #3"
    assert said.facts == (("target", "incident:3"), ("result", "ok"), ("device_id", "d"))


# --- the console pages ---------------------------------------------------------------------------


@pytest.fixture
async def console(db_url: str, pki: PkiDir) -> AsyncIterator[Console]:
    """The seeded console with a signing key (a remote session may be opened from an incident)."""
    settings = server_settings(db_url, pki=pki, incidents={"enabled": False})
    async with api_client(settings) as (client, runtime):
        yield Console(client, runtime, await seed(runtime))


def _section(html: str, start: str, end: str) -> str:
    at = html.index(start)
    return html[at : html.index(end, at)]


async def test_the_audit_log_and_the_timeline_read_as_sentences(console: Console) -> None:
    device_id = console.seeded.devices[console.seeded.customers[0]][0]
    async with console.runtime.sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        device.inventory = {"agent": {"attended": False}}  # a session is active at once
        await session.commit()
    incident = await open_incident(console, device_id)
    csrf = await sign_in(console.client, "tina")
    for action, form in (("ack", {}), ("assign", {"user": "tina"}), ("session", {"reason": "jam <tray 2>"})):
        done = await console.client.post(f"/incidents/{incident}/{action}", data={"csrf": csrf, **form})
        assert done.status_code == 303, done.text
    session_id = done.headers["location"].removeprefix("/sessions/")

    page = await console.client.get(f"/incidents/{incident}")
    assert page.status_code == 200
    timeline = _section(page.text, 'id="tl-h"', "</section>")
    said = [
        html_lib.unescape(re.sub(r"<[^>]+>", "", s)).strip()
        for s in re.findall(r'<span class="said">(.*?)</span>', timeline)
    ]
    assert "tina acknowledged this incident" in said
    assert "tina assigned this incident to tina" in said
    assert f"tina opened session {session_id} on {device_id} for “jam <tray 2>”" in said
    assert f'<a href="/sessions/{session_id}">{session_id}</a>' in timeline
    assert f'<a href="/devices/{device_id}">{device_id}</a>' in timeline
    assert "jam &lt;tray 2&gt;" in timeline  # escaped by the template
    assert '{"' not in timeline
    assert 'data-kind="acknowledged"' in timeline

    await sign_in(console.client, "ada")
    log = await console.client.get("/audit", params={"target": f"incident:{incident}"})
    assert log.status_code == 200
    rows = _section(log.text, 'id="audit-entries"', "</tbody>")
    link = f'<a href="/incidents/{incident}">incident #{incident}</a>'
    assert f"tina acknowledged {link}" in rows
    assert f"tina assigned {link} to tina" in rows
    assert '{"' not in rows
    assert "<details>" in rows  # the full detail, for the auditor
    assert f"<dt>device_id</dt><dd>{device_id}</dd>" in rows
    opened = _section(
        (await console.client.get("/audit", params={"action": "session.requested"})).text,
        'id="audit-entries"',
        "</tbody>",
    )
    assert (
        f'tina opened session <a href="/sessions/{session_id}">{session_id}</a> on <a href="/devices/{device_id}">{device_id}</a>'
        in opened
    )


async def test_an_unknown_action_reads_as_key_value_text_on_the_audit_page(console: Console) -> None:
    async with console.runtime.sessions() as session:
        audit.record(
            session,
            actor="user:ada",
            action="widget.frobbed",
            target="device:dev-x",
            detail={"color": "<b>red</b>", "size": {"w": 3}},
        )
        await session.commit()
    await sign_in(console.client, "ada")
    page = await console.client.get("/audit", params={"action": "widget.frobbed"})
    rows = _section(page.text, 'id="audit-entries"', "</tbody>")
    assert 'class="said unphrased"' in rows
    said = re.search(r'class="said unphrased">(.*?)</td>', rows, re.S)
    assert said, rows
    assert "color: &lt;b&gt;red&lt;/b&gt;" in said.group(1)  # PostgreSQL keeps its own key order
    assert "size.w: 3" in said.group(1)
    assert "<b>red" not in rows
    assert '{"' not in rows
    assert '<a href="/devices/dev-x">dev-x</a>' in rows
