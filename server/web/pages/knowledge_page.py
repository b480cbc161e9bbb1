"""The knowledge page (``/knowledge``, docs/web.md): the published articles the caller may read
(``server.knowledge.service``: a customer gets the customer-safe ones only), most successful
first, or — with a search — those the knowledge search finds (``server.knowledge.suggest``,
the service of ``GET /api/v1/knowledge/search`` and ``fleetcare kb search``), best match first,
beside the past incidents it finds; filtered by type, fault code and model, 50 a page. Each
article shows the counters the service keeps on it: how often it was used on an incident and
worked, how often its remote action was sent from a suggestion, and (staff) for how many
incidents it was suggested. Its CSV (``/knowledge.csv``) exports the same list, every page.

Roles that may write articles (the permissions table's ``WRITE_KNOWLEDGE``) also get the drafts
waiting for review, each with *Publish* and *Reject* — the service's ``publish`` and
``retire``, as ``POST /api/v1/knowledge/articles/{id}/publish|retire``, audited there."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import QueryParams

from server import clock
from server.api.deps import SessionDep
from server.api.knowledge import ArticleRetire
from server.base import access, permissions
from server.base.permissions import Capability
from server.base.users import Principal
from server.db.models import Article, ArticleState, ArticleType, Role
from server.errors import Conflict, InvalidInput
from server.knowledge import service as knowledge_service
from server.knowledge import suggest
from server.web import auth
from server.web.auth import WebUser
from server.web.csv_export import EXPORT_LIMIT, csv_response
from server.web.paging import PAGE_SIZE, Paging
from server.web.queries import filter_options
from server.web.rendering import choice_param, invalid, known_params, page_router, render

__all__ = [
    "CSV_HEADER",
    "DECISIONS",
    "KNOWLEDGE_PARAMS",
    "KnowledgeQuery",
    "listed",
    "parse_knowledge",
    "router",
    "success_rate",
]

router = page_router()

TYPES = tuple(t.value for t in ArticleType)
DECISIONS = ("publish", "reject")
"""A reviewer's answer to a draft: publish it, or reject it (the service retires it)."""
SEARCH_MAX = 1000
"""Characters at most in a search, as ``GET /api/v1/knowledge/search`` takes."""
KNOWLEDGE_PARAMS = ("q", "type", "fault", "model", "page")
"""The query parameters of the page and its CSV: any other is a 422 naming it, never ignored."""
INCIDENT_HITS = 10
"""Past incidents shown beside a search's articles, best match first."""
CSV_HEADER = (
    "id",
    "title",
    "type",
    "state",
    "fault_codes",
    "models",
    "customer_safe",
    "use_count",
    "success_count",
    "success_rate",
    "apply_count",
    "suggested_for",
    "search_score",
    "created_by",
    "published",
    "last_used",
)


@dataclass(frozen=True, slots=True)
class KnowledgeQuery:
    q: str | None = None  # the search; None lists every published article
    type: str | None = None
    fault: str | None = None
    model: str | None = None


def parse_knowledge(params: Mapping[str, str]) -> KnowledgeQuery:
    """The search and filters from a query string, checked (422 naming the field, also for a
    parameter the page does not know)."""
    known_params(params, KNOWLEDGE_PARAMS)
    q = (params.get("q") or "").strip()
    if len(q) > SEARCH_MAX:
        raise InvalidInput(f"q: at most {SEARCH_MAX} characters", field="q")
    return KnowledgeQuery(
        q=q or None,
        type=choice_param(params.get("type"), "type", TYPES),
        fault=(params.get("fault") or "").strip()[:256] or None,
        model=(params.get("model") or "").strip()[:256] or None,
    )


def success_rate(article: Article) -> float | None:
    """The share of the incidents it was used on that it fixed (None before its first use) —
    the plain ratio of the service's two counters, not the suggestions' smoothed rate."""
    return None if not article.use_count else article.success_count / article.use_count


async def listed(
    session: AsyncSession, user: Principal, where: KnowledgeQuery
) -> tuple[list[Article], dict[int, float], list[suggest.SearchHit]]:
    """The published articles ``user`` may read that match the filters, most successful first;
    with a search only those it finds, best match first, with their scores and the past
    incidents it found (in ``user``'s scope)."""
    rows, _ = await knowledge_service.list_articles(
        session,
        user,
        knowledge_service.ArticleFilter(
            state=ArticleState.PUBLISHED.value, type=where.type, fault_code=where.fault, model=where.model
        ),
        limit=EXPORT_LIMIT,
    )
    if where.q is None:
        return rows, {}, []
    hits = await suggest.search(session, user, where.q, limit=EXPORT_LIMIT)
    scores = {hit.id: hit.score for hit in hits if hit.kind == "article"}
    found = sorted((a for a in rows if a.id in scores), key=lambda a: (-scores[a.id], a.id))
    return found, scores, [hit for hit in hits if hit.kind == "incident"]


async def _context(query: Mapping[str, str], session: AsyncSession, user: Principal) -> dict[str, Any]:
    paging = Paging(query)
    where = parse_knowledge(query)
    found, scores, incidents = await listed(session, user, where)
    rows = found[paging.offset : paging.offset + paging.size]
    staff = user.role is not Role.CUSTOMER
    can_review = permissions.allows(user, Capability.WRITE_KNOWLEDGE)
    drafts: list[Article] = []
    drafts_total = 0
    if can_review:
        drafts, drafts_total = await knowledge_service.list_articles(
            session, user, knowledge_service.ArticleFilter(state=ArticleState.DRAFT.value), limit=PAGE_SIZE
        )
    _, _, models = await filter_options(
        session, access.device_condition(await access.scope_for(session, user))
    )
    return {
        "rows": rows,
        "where": where,
        "scores": scores,
        "incidents": incidents[:INCIDENT_HITS],
        "incidents_total": len(incidents),
        **paging.context(len(found)),
        "types": TYPES,
        "models": models,
        "staff": staff,
        "suggested": await knowledge_service.suggested_counts(session, [a.id for a in rows]) if staff else {},
        "rate": success_rate,
        "can_review": can_review,
        "drafts": drafts,
        "drafts_total": drafts_total,
        "csv_url": paging.export("/knowledge.csv"),
        "notice": None,
    }


@router.get("/knowledge", response_class=HTMLResponse)
async def knowledge_view(request: Request, session: SessionDep, web: WebUser) -> Response:
    user = permissions.check(web.principal, Capability.READ_KNOWLEDGE)
    return await render(request, "knowledge.html", web, **await _context(request.query_params, session, user))


@router.get("/knowledge.csv")
async def knowledge_csv(request: Request, session: SessionDep, web: WebUser) -> Response:
    """The articles the page lists with the same search and filters (all pages, at most
    :data:`EXPORT_LIMIT`)."""
    user = permissions.check(web.principal, Capability.READ_KNOWLEDGE)
    found, scores, _ = await listed(session, user, parse_knowledge(request.query_params))
    staff = user.role is not Role.CUSTOMER
    suggested = await knowledge_service.suggested_counts(session, [a.id for a in found]) if staff else {}
    return csv_response(
        f"knowledge-{clock.now():%Y%m%d-%H%M}.csv",
        CSV_HEADER,
        (
            (
                a.id,
                a.title,
                a.type,
                a.state,
                a.fault_codes or [],
                a.models or [],
                a.customer_safe,
                a.use_count,
                a.success_count,
                None if (rate := success_rate(a)) is None else round(rate, 3),
                a.apply_count,
                suggested.get(a.id, 0) if staff else None,
                scores.get(a.id),
                a.created_by,
                a.published_at,
                a.last_used_at,
            )
            for a in found
        ),
    )


@router.post("/knowledge/articles/{article_id}/{decision}", response_class=HTMLResponse)
async def review(
    article_id: int, decision: str, request: Request, session: SessionDep, web: WebUser
) -> Response:
    """Publish or reject a draft through the knowledge service (audited as ``article.published``
    or ``article.retired``); then the page, with the filters it was sent from (``back``)."""
    form = await auth.form_data(request)
    auth.check_csrf(web, form)
    user = permissions.check(web.principal, Capability.WRITE_KNOWLEDGE)
    choice_param(decision, "decision", DECISIONS)
    article = await knowledge_service.get_article(session, user, article_id)
    if decision == "publish":
        article = await knowledge_service.publish(session, user, article_id)
        verb = "Published"
    else:
        if article.state != ArticleState.DRAFT.value:
            raise Conflict(f"article {article_id} is {article.state}: only a draft can be rejected here")
        try:
            body = ArticleRetire(reason=form.get("reason", ""))
        except ValidationError as exc:
            raise invalid(exc) from None
        article = await knowledge_service.retire(session, user, article_id, reason=body.reason)
        verb = "Rejected"
    context = await _context(QueryParams(form.get("back", "")), session, user)
    context["notice"] = {"verb": verb, "id": article.id, "title": article.title}
    return await render(request, "knowledge.html", web, **context)
