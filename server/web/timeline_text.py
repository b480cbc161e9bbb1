"""The incident timeline as sentences, with the audit log's templates and parts
(:mod:`server.web.audit_text`): a person's step on the incident is phrased as its audit entry
(``acknowledged`` as ``incident.acknowledged``, a session's step as ``session.<kind>``, a
knowledge link as ``article.<kind>``), the server's own steps (opened, restored, rebuilt …)
here. The incident is the page's own ("this incident"), its device the device named when an
entry does not name one.

Kinds: :mod:`server.base.timeline` lists them; tests/web/test_readable.py finds every kind the
source writes and fails on one without a phrase in :data:`TIMELINE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from server.web.audit_text import PHRASES, Entry, Part, Phrase, Sentence, describe

__all__ = ["TIMELINE", "timeline_sentence"]

_OPENED = {
    "offline": "{actor} opened {incident}: {device} went offline[ (since {when:t_fault})][, P{priority}]",
    "fault": "{actor} opened {incident}: fault[ {list:codes}][ — the device is {effect}][, {severity}]"
    "[, P{priority}][ (since {when:t_fault})]",
}

TIMELINE: dict[str, Phrase] = {
    # the server's own steps
    "opened": lambda e: _OPENED.get(e.text("incident_kind"), _OPENED["fault"]),
    "fault.joined": "Fault {code:code} joined {incident}",
    "fault.recurred": "The fault came back[ ({list:codes})]",
    "escalated": "Escalated: the device is now {effect}[ ({severity})]",
    "restored": "{device|The device} recovered",
    "restore.withdrawn": "Later data withdrew the recovery of {device|the device}: the fault was still there",
    "resolution.withdrawn": "{actor} withdrew the automatic resolution of {incident}[ ({reason})]",
    "rebuilt": "{actor} rebuilt the times of {incident}[ from {reason}][: fault since {when:t_fault}]"
    "[, detected {when:t_detect}][, restored {when:t_restored}][ (the fault was since {when:was_t_fault})]"
    "[{choice:orphaned:, its fault history is gone/}]",
    "repeat.of": "This incident repeats the failure of {other_incident}"
    "[, {duration:after_restore_s} after its restore][ ({list:codes})]",
    "repeated": "{other_incident} repeated the failure of {incident}"
    "[, {duration:after_restore_s} after the restore][ ({list:codes})]",
    "onsite": "{engineer|A field engineer} was on site[ (visit {visit})]",
    "command": "{actor} sent {command} to {device}[ in {session}]",
    "guide.step": "{actor} did step {ordinal:step} of guide run #{run_id}: {result}{notes:note}",
    "knowledge.unfixed": "{numbers:article_ids:Article} did not fix {incident} after all",
    # a person's steps, phrased as their audit entries
    **{kind: PHRASES[f"incident.{kind}"] for kind in ("acknowledged", "assigned", "dispatched", "guidance")},
    **{kind: PHRASES[f"incident.{kind}"] for kind in ("resolved", "reopened", "closed", "updated")},
    "session.opened": PHRASES["session.requested"],
    **{f"session.{k}": PHRASES[f"session.{k}"] for k in ("activated", "closed", "expired", "consent.denied")},
    **{f"guide.{kind}": PHRASES[f"guide.{kind}"] for kind in ("started", "finished")},
    **{f"knowledge.{kind}": PHRASES[f"article.{kind}"] for kind in ("linked", "drafted", "applied")},
}


def timeline_sentence(
    incident_id: int,
    device_id: str,
    entry: Any,
    sessions: Mapping[str, str] | None = None,
    *,
    session_links: bool = True,
) -> Sentence:
    """One timeline entry (``IncidentEntry`` or its API shape: ``kind``, ``actor``, ``detail``)
    of the incident on its own page. ``session_links=False``: sessions and commands are named,
    not linked (for a reader who may not open remote sessions)."""
    here = f"incident:{incident_id}"
    detail = entry.detail or {}
    said = describe(
        Entry(entry.actor, entry.kind, here, detail, "ok", here, sessions or {}, device_id), TIMELINE
    )
    if session_links:
        return said
    unlinked = [
        Part(p.text, code=p.code) if (p.href or "").startswith("/sessions/") else p for p in said.parts
    ]
    return replace(said, parts=tuple(unlinked))
