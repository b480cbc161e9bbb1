"""Suggestions for an incident, and search across articles and past incidents.

Ranking (docs/knowledge.md): a published article's **environment tier** comes first —

    4 same model and fault code · 3 any-model article, same fault code · 2 same fault code,
    other model, or an article without any fault code · 1 same or any model, no fault code in
    common · 0 none

(an article's codes include those of the incidents it fixed: server/knowledge/index.py) — and
within a tier ``success_rate * prior * (0.2 + 0.4 * signature + 0.4 * text)`` orders them, where
*signature* is the cosine between the incident's abnormal metrics and the article's
(server/knowledge/signature.py), *text* the TF-IDF cosine of the incident's symptom with the
article's title and symptom, *success_rate* = (successes + 1) / (uses + 2) and *prior* =
sqrt((successes + 1) / (the tier's most successes + 1)): of two fixes for the same fault, the
one that worked more often first (benchmarks/kb_quality.py). A firmware
outside the article's range halves it. Only published articles are ranked (never drafts or
retired ones); an article of tier ≤ 1 is offered only if its signature or text matches.

What was served is recorded (``kb_suggestions_shown``: per incident and article the best rank
and the first time shown) while the incident is unresolved, for the KPI kb_suggestion_hit5.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Text, case, cast, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from server.base import access, audit
from server.base.timeline import note
from server.base.users import Principal
from server.db.models import (
    Article,
    ArticleState,
    Device,
    Incident,
    IncidentStatus,
    Role,
    SuggestionShown,
)
from server.db.types import utcnow
from server.errors import InvalidInput, NotFound
from server.knowledge import index as kb_index
from server.knowledge import text
from server.knowledge.signature import incident_signature, similarity

__all__ = [
    "SearchHit",
    "Suggestion",
    "applicable",
    "applied",
    "rank",
    "record_shown",
    "search",
    "suggestions",
]

W_BASE, W_SIGNATURE, W_TEXT = 0.2, 0.4, 0.4
SEARCH_CANDIDATES = 500  # past incidents read per search (newest matching first)


@dataclass(slots=True)
class Suggestion:
    article_id: int
    title: str
    type: str
    score: float
    tier: int
    signature_similarity: float
    text_similarity: float
    success_rate: float
    success_count: int
    use_count: int
    actions: list[dict[str, Any]]
    customer_safe: bool
    why: str
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _firmware_ok(entry: kb_index.Entry, have: tuple[int, ...] | None) -> bool | None:
    """None: nothing to compare; else whether the version ``have`` is in the article's range."""
    low, high = entry.firmware_range
    if have is None or (low is None and high is None):
        return None
    return (low is None or have >= low) and (high is None or have <= high)


def _abnormal(sig: dict[str, float], limit: int = 3) -> str:
    top = sorted(sig.items(), key=lambda kv: -abs(kv[1]))[:limit]
    return ", ".join(f"{m} {'high' if z > 0 else 'low'} (z {z:+.1f})" for m, z in top)


def rank(
    idx: kb_index.ArticleIndex,
    *,
    model: str | None,
    firmware: str | None,
    codes: list[str],
    signature: dict[str, float],
    symptom: str,
    limit: int,
) -> list[Suggestion]:
    """The top ``limit`` articles of ``idx`` for an incident with this environment, signature
    and symptom. Pure: the benchmark and the tests call it directly."""
    query = idx.query(symptom)
    texts = idx.text_scores(query) if query else {}
    candidates: set[int] = set(texts)
    for code in codes:
        candidates.update(idx.by_code.get(code, ()))
    for metric in signature:
        candidates.update(idx.by_metric.get(metric, ()))
    wanted = set(codes)
    have = kb_index.parse_version(firmware)
    by_tier: dict[int, list[kb_index.Entry]] = {}
    for article_id in candidates:  # the tier is cheap: set lookups
        entry = idx.entries[article_id]
        exact = model is not None and model in entry.models
        if not entry.codes.isdisjoint(wanted):
            tier = 4 if exact else 3 if not entry.models else 2
        elif exact or not entry.models:
            # an article with no fault code (written from a customer's report) does not
            # contradict the incident's code: beside "the code on another model"
            tier = 2 if wanted and not entry.codes else 1
        else:
            tier = 0
        by_tier.setdefault(tier, []).append(entry)
    scored: list[tuple[float, int, int, int, float, float, bool | None]] = []
    for tier in sorted(by_tier, reverse=True):  # a lower tier never outranks a higher one
        if len(scored) >= limit:
            break
        most = max(entry.success_count for entry in by_tier[tier])
        for entry in by_tier[tier]:
            sig = round(similarity(signature, entry.signature), 3) if entry.signature and signature else 0.0
            txt = round(min(1.0, texts.get(entry.id, 0.0)), 3)
            if (tier <= 1 or not (entry.codes & wanted)) and sig <= 0 and txt <= 0:
                continue  # no code in common: only on evidence
            fw = _firmware_ok(entry, have)
            damp = 0.5 if fw is False else 1.0
            prior = math.sqrt(
                (entry.success_count + 1) / (most + 1)
            )  # how often it worked, vs the tier's best
            within = entry.success_rate * prior * (W_BASE + W_SIGNATURE * sig + W_TEXT * txt) * damp
            scored.append(
                (round(tier + 0.999 * within, 4), entry.success_count, -entry.id, tier, sig, txt, fw)
            )
    top = heapq.nlargest(limit, scored)
    return [
        _explain(
            idx.entries[-key[2]], key, model=model, firmware=firmware, wanted=wanted, signature=signature
        )
        for key in top
    ]


def _explain(
    entry: kb_index.Entry,
    key: tuple[float, int, int, int, float, float, bool | None],
    *,
    model: str | None,
    firmware: str | None,
    wanted: set[str],
    signature: dict[str, float],
) -> Suggestion:
    score, _, _, tier, sig, txt, fw = key
    common = entry.codes & wanted
    shared = ", ".join(sorted(common))
    if common and common <= entry.learned:
        shared += " (of incidents it fixed)"
    exact = model is not None and model in entry.models
    reasons = [
        {
            4: f"same model and fault code {shared}",
            3: f"fault code {shared} (article for any model)",
            2: f"fault code {shared} on another model ({', '.join(sorted(entry.models))})",
            1: "same model, other fault code" if exact else "article for any model, other fault code",
            0: "other model and fault code",
        }[tier]
        if tier != 2 or shared
        else ("same model" if exact else "article for any model") + ", article without a fault code"
    ]
    if sig > 0:
        reasons.append(f"telemetry signature similarity {sig:.2f}: {_abnormal(signature)}")
    reasons.append(f"{entry.success_count} of {entry.use_count} successes")
    if txt > 0:
        reasons.append(f"symptom similarity {txt:.2f}")
    if fw is False:
        reasons.append(
            f"firmware {firmware} outside {entry.firmware_min or '…'} to {entry.firmware_max or '…'}"
        )
    return Suggestion(
        article_id=entry.id,
        title=entry.title,
        type=entry.type,
        score=score,
        tier=tier,
        signature_similarity=sig,
        text_similarity=txt,
        success_rate=round(entry.success_rate, 3),
        success_count=entry.success_count,
        use_count=entry.use_count,
        actions=entry.actions,
        customer_safe=entry.customer_safe,
        why="; ".join(reasons),
        reasons=reasons,
    )


async def suggestions(
    session: AsyncSession, who: Principal, incident_id: int, *, limit: int = 5
) -> list[Suggestion]:
    """Ranked articles for the incident (its device must be in ``who``'s scope)."""
    incident = await session.get(Incident, incident_id)
    if incident is None:
        raise NotFound("incident", incident_id)
    device = await access.check_device(session, who, incident.device_id, via=("incident", incident_id))
    idx = await kb_index.current(session)
    if not idx.entries:
        return []
    codes = list(dict.fromkeys(c for c in [incident.fault_code, *(incident.codes or [])] if c))
    signature = await incident_signature(session, incident.device_id, incident.t_fault)
    found = rank(
        idx,
        model=device.model,
        firmware=device.firmware,
        codes=codes,
        signature=signature,
        symptom=incident.symptom,
        limit=limit,
    )
    if incident.status not in _SETTLED:  # shown after the resolution, they did not help resolve it
        await record_shown(session, incident.id, [s.article_id for s in found])
    return found


_SETTLED = frozenset({IncidentStatus.RESOLVED.value, IncidentStatus.CLOSED.value})


async def record_shown(session: AsyncSession, incident_id: int, article_ids: list[int]) -> None:
    """Upsert one ``kb_suggestions_shown`` row per article shown for the incident (rank = its
    1-based position in ``article_ids``): a new row keeps the rank and now as the first time
    shown; an existing one keeps its first time and the better of the two ranks. One
    statement, committed (a GET's only write)."""
    if not article_ids:
        return
    now = utcnow()
    rows = [
        {"incident_id": incident_id, "article_id": a, "best_rank": r, "first_shown_at": now}
        for r, a in enumerate(article_ids, 1)
    ]
    name = session.get_bind().dialect.name
    if name == "sqlite":
        stmt: Any = sqlite.insert(SuggestionShown)
    elif name == "postgresql":
        stmt = postgresql.insert(SuggestionShown)
    else:
        raise NotImplementedError(f"database backend {name!r} is not supported")
    kept = SuggestionShown.best_rank
    best = case((stmt.excluded.best_rank < kept, stmt.excluded.best_rank), else_=kept)
    await session.execute(
        stmt.values(rows).on_conflict_do_update(
            index_elements=["incident_id", "article_id"], set_={"best_rank": best}
        )
    )
    await session.commit()


@dataclass(slots=True)
class SearchHit:
    kind: str  # article | incident
    id: int
    title: str
    score: float
    snippet: str
    fault_codes: list[str]
    state: str  # article state, or incident status

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _snippet(value: str, width: int = 200) -> str:
    flat = " ".join(value.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


async def search(session: AsyncSession, who: Principal, q: str, *, limit: int = 20) -> list[SearchHit]:
    """Published articles (customers: customer-safe ones) and resolved incidents in ``who``'s
    scope, by TF-IDF cosine of ``q`` (the article index's idf for both, so scores compare)."""
    idx = await kb_index.current(session)
    query = idx.query(q)
    if not query:
        return []
    hits: list[SearchHit] = []
    article_scores = {a: s for a, s in idx.text_scores(query).items() if s > 0}
    safe_only = who.role is Role.CUSTOMER
    if article_scores:
        rows = await session.scalars(select(Article).where(Article.id.in_(sorted(article_scores))))
        for article in rows:
            if article.state != ArticleState.PUBLISHED.value or (safe_only and not article.customer_safe):
                continue
            hits.append(
                SearchHit(
                    kind="article",
                    id=article.id,
                    title=article.title,
                    score=round(article_scores[article.id], 4),
                    snippet=_snippet(article.symptom),
                    fault_codes=list(article.fault_codes or []),
                    state=article.state,
                )
            )
    hits.extend(await _search_incidents(session, who, idx, query))
    hits.sort(key=lambda h: (-h.score, h.kind, h.id))
    return hits[:limit]


async def _search_incidents(
    session: AsyncSession, who: Principal, idx: kb_index.ArticleIndex, query: text.Vector
) -> list[SearchHit]:
    """Resolved incidents whose notes contain a query term (SQL narrows, TF-IDF scores)."""
    body = func.lower(
        Incident.symptom + " " + Incident.cause + " " + Incident.resolution + " " + cast(Incident.codes, Text)
    )
    terms = sorted(query, key=lambda t: -query[t])[:8]
    scope = access.device_condition(await access.scope_for(session, who))
    stmt = (
        select(Incident)
        .join(Device, Device.id == Incident.device_id)
        .where(
            Incident.status.in_([IncidentStatus.RESOLVED.value, IncidentStatus.CLOSED.value]),
            or_(*(body.contains(term, autoescape=True) for term in terms)),
            *([] if scope is None else [scope]),
        )
        .order_by(Incident.id.desc())
        .limit(SEARCH_CANDIDATES)
    )
    hits: list[SearchHit] = []
    for incident in await session.scalars(stmt):
        words = " ".join([incident.symptom, incident.cause, incident.resolution, *(incident.codes or [])])
        score = text.cosine(query, idx.query(words))
        if score > 0:
            hits.append(
                SearchHit(
                    kind="incident",
                    id=incident.id,
                    title=f"#{incident.id} {incident.fault_code or incident.kind} on {incident.device_id}",
                    score=round(score, 4),
                    snippet=_snippet(incident.resolution or incident.cause or incident.symptom),
                    fault_codes=list(incident.codes or []),
                    state=incident.status,
                )
            )
    return hits


async def applied(
    session: AsyncSession, who: Principal, incident_id: int, article_id: int, *, command_id: str, action: str
) -> None:
    """A suggested remote action was sent into a session: counted on the article and noted on
    the incident's timeline (its success is counted when the incident is resolved with it)."""
    article = await session.scalar(
        select(Article)
        .where(Article.id == article_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    incident = await session.get(Incident, incident_id)
    if article is None or incident is None:
        return
    article.apply_count += 1
    note(
        session,
        incident,
        "knowledge.applied",
        actor=who.actor,
        article_id=article_id,
        command_id=command_id,
        action=action,
    )
    audit.record(
        session,
        actor=who.actor,
        action="article.applied",
        target=f"article:{article_id}",
        detail={"incident_id": incident_id, "command_id": command_id, "action": action},
    )
    await session.commit()


async def applicable(
    session: AsyncSession, who: Principal, incident_id: int, article_id: int, action_index: int
) -> tuple[Incident, dict[str, Any]]:
    """The incident (in scope) and the article's remote action to send for it."""
    incident = await session.get(Incident, incident_id)
    if incident is None:
        raise NotFound("incident", incident_id)
    await access.check_device(session, who, incident.device_id, via=("incident", incident_id))
    article = await session.get(Article, article_id)
    if article is None or article.state != ArticleState.PUBLISHED.value:
        raise InvalidInput(f"article_id: no published article {article_id}", field="article_id")
    actions = article.actions or []
    if not actions:
        raise InvalidInput(
            f"article_id: article {article_id} has no remote action to send", field="article_id"
        )
    if not 0 <= action_index < len(actions):
        raise InvalidInput(
            f"action_index: the article has actions 0 to {len(actions) - 1}", field="action_index"
        )
    return incident, actions[action_index]
