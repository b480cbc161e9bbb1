"""Capture in the workflow: resolving an incident links an existing article or drafts one, in
the resolution's own transaction (server/incidents/service.py ``resolve``), so nobody opens a
separate tool. A reopen takes the success back: the fix did not hold.

- **link** (``article_id``): ``use_count`` + 1, ``reuse_count`` + 1, ``success_count`` + 1 if
  the article's fix worked (``fixed``);
- **draft** (``draft_article``): a new draft article from the incident — symptom, codes, the
  device's model and firmware, cause and resolution notes, and the remote actions that
  succeeded (with their arguments) in the incident's sessions or as its remote evidence.
  Unless asked either way (``draft_article`` true or false), a resolution drafts one by itself
  when its fix is **new**: a person resolved it (remote, customer or field) with resolution
  notes, and no article that is not retired covers any of its fault codes for the device's
  model — so the knowledge base fills itself, and a reviewer publishes or rejects the draft.

Either way the link keeps the incident's telemetry signature, and the article's signature is
the mean over the incidents it fixed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

import protocol
from server.base import audit
from server.base.timeline import note
from server.base.users import Principal
from server.db.models import (
    Article,
    ArticleLink,
    ArticleState,
    ArticleType,
    Command,
    CommandState,
    Device,
    Incident,
    RemoteSession,
)
from server.errors import InvalidInput
from server.knowledge import index
from server.knowledge.signature import incident_signature, mean_signature
from server.knowledge.similar import fault_codes

__all__ = ["PERSON_CHANNELS", "incident_actions", "is_new_fix", "on_reopen", "on_resolve"]

LINKED, DRAFTED = "linked", "drafted"


async def incident_actions(
    session: AsyncSession, incident: Incident, evidence: list[str] | None = None
) -> list[dict[str, Any]]:
    """Remote actions that succeeded for the incident, oldest first, each once per argument set:
    commands in its remote sessions plus ``evidence`` (command ids the resolution cites)."""
    sessions = select(RemoteSession.id).where(RemoteSession.incident_id == incident.id)
    found = or_(Command.session_id.in_(sessions), Command.id.in_(evidence or []))
    rows = await session.scalars(
        select(Command)
        .where(
            Command.device_id == incident.device_id,
            Command.state == CommandState.SUCCEEDED.value,
            Command.action.not_in(sorted(protocol.CONTROL_ACTIONS)),
            found,
        )
        .order_by(Command.issued_at, Command.id)
    )
    actions: list[dict[str, Any]] = []
    for command in rows:
        item = {"action": command.action, "args": dict(command.args or {})}
        if item not in actions:
            actions.append(item)
    return actions


async def _refresh_signature(session: AsyncSession, article: Article) -> None:
    rows = await session.scalars(
        select(ArticleLink.signature).where(ArticleLink.article_id == article.id, ArticleLink.fixed.is_(True))
    )
    article.signature = mean_signature([sig for sig in rows if sig])


async def _draft(
    session: AsyncSession, incident: Incident, who: Principal, evidence: list[str], now: datetime
) -> Article:
    device = await session.get(Device, incident.device_id)
    codes = fault_codes(incident)
    what = incident.symptom.strip() or (f"fault {', '.join(codes)}" if codes else f"{incident.kind} incident")
    model = device.model if device is not None else None
    article = Article(
        title=f"{codes[0]}: {what}"[:256] if codes else what[:256],
        type=ArticleType.PROBLEM.value,
        state=ArticleState.DRAFT.value,
        symptom=what,
        cause=incident.cause,
        resolution=incident.resolution,
        actions=await incident_actions(session, incident, evidence),
        models=[model] if model else [],
        fault_codes=codes,
        firmware_min=device.firmware if device is not None else None,
        firmware_max=device.firmware if device is not None else None,
        signature={},
        customer_safe=False,
        source_incident_id=incident.id,
        created_by=who.name,
        created_at=now,
        updated_at=now,
    )
    session.add(article)
    await session.flush()
    return article


PERSON_CHANNELS = ("remote", "customer", "field")
"""Resolutions a person made: only their fixes are worth an article (``auto``: it cleared itself)."""


async def is_new_fix(session: AsyncSession, incident: Incident) -> bool:
    """Whether resolving ``incident`` taught something the knowledge base does not hold: a person
    resolved it with resolution notes, it has a fault code, and no article that is not retired
    covers any of its codes for the device's model (an article without models covers every model)."""
    codes = fault_codes(incident)
    if not incident.resolution.strip() or incident.channel not in PERSON_CHANNELS or not codes:
        return False
    device = await session.get(Device, incident.device_id)
    model = device.model if device is not None else None
    candidates = await session.scalars(
        select(Article).where(
            Article.state != ArticleState.RETIRED.value,
            or_(*(cast(Article.fault_codes, Text).contains(f'"{code}"', autoescape=True) for code in codes)),
        )
    )
    for article in candidates:
        if set(article.fault_codes) & set(codes) and (not article.models or model in article.models):
            return False
    return True


async def on_resolve(
    session: AsyncSession,
    incident: Incident,
    who: Principal,
    *,
    article_id: int | None,
    draft: bool | None,
    fixed: bool,
    evidence: list[str],
    now: datetime,
) -> Article | None:
    """Link ``article_id`` or draft an article for the resolved ``incident`` (the caller commits);
    ``draft`` None: draft when the fix is new (:func:`is_new_fix`)."""
    automatic = draft is None and article_id is None and await is_new_fix(session, incident)
    if draft is None:
        draft = automatic
    if article_id is not None and draft:
        raise InvalidInput(
            "draft_article: give either article_id or draft_article, not both", field="draft_article"
        )
    if article_id is None and not draft:
        return None
    if draft:
        article = await _draft(session, incident, who, evidence, now)
        kind = DRAFTED
    else:
        found = await session.scalar(
            select(Article)
            .where(Article.id == article_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if found is None or found.state == ArticleState.RETIRED.value:
            raise InvalidInput(
                f"article_id: no article {article_id} to link (it does not exist or is retired)",
                field="article_id",
            )
        article, kind = found, LINKED
    signature = await incident_signature(session, incident.device_id, incident.t_fault)
    link = await session.scalar(
        select(ArticleLink).where(
            ArticleLink.article_id == article.id, ArticleLink.incident_id == incident.id
        )
    )
    if link is None:  # a re-resolve after a reopen keeps the first link: one use per incident
        link = ArticleLink(
            article_id=article.id, incident_id=incident.id, kind=kind, fixed=False, signature=signature,
            created_by=who.name, created_at=now,
        )  # fmt: skip
        session.add(link)
        article.use_count += 1
        if kind == LINKED:
            article.reuse_count += 1
    if fixed and not link.fixed:
        article.success_count += 1
    link.fixed, link.signature = fixed, signature
    article.last_used_at = article.updated_at = now
    await session.flush()
    await _refresh_signature(session, article)
    note(session, incident, f"knowledge.{kind}", actor=who.actor, ts=now, article_id=article.id, fixed=fixed)
    audit.record(
        session,
        actor=who.actor,
        action=f"article.{kind}",
        target=f"article:{article.id}",
        detail={"incident_id": incident.id, "fixed": fixed, **({"automatic": True} if automatic else {})},
    )
    index.invalidate()
    return article


async def on_reopen(session: AsyncSession, incident: Incident, who: Principal, now: datetime) -> list[int]:
    """The incident's problem is back: the articles it was resolved with did not fix it."""
    links = list(
        await session.scalars(
            select(ArticleLink).where(ArticleLink.incident_id == incident.id, ArticleLink.fixed.is_(True))
        )
    )
    changed: list[int] = []
    for link in links:
        article = await session.get(Article, link.article_id)
        if article is None:
            continue
        link.fixed = False
        article.success_count = max(0, article.success_count - 1)
        article.updated_at = now
        await session.flush()
        await _refresh_signature(session, article)
        changed.append(article.id)
    if changed:
        note(session, incident, "knowledge.unfixed", actor=who.actor, ts=now, article_ids=changed)
        index.invalidate()
    return changed
