"""Similar past incidents on the incident page: the knowledge base's suggestions for the
incident (``GET /incidents/{id}/suggestions``, staff only) with each article's cause,
resolution and the past incidents it solved (``GET /knowledge/articles/{id}``).

No route of its own: the incident page shows it. Suggesting records the articles as shown
(``server.knowledge.suggest``), as the API does, for the KPI ``kb_suggestion_hit5``."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.base import permissions
from server.base.permissions import Capability
from server.base.users import Principal
from server.db.models import Incident
from server.knowledge import service as knowledge_service
from server.knowledge import suggest
from server.knowledge.similar import SimilarIncident, similar_incidents

__all__ = ["PAST_INCIDENTS", "SUGGESTIONS", "similar_for", "suggestions_for"]

SUGGESTIONS = 5
PAST_INCIDENTS = 5


async def suggestions_for(
    session: AsyncSession, user: Principal, incident_id: int
) -> list[dict[str, Any]] | None:
    """Per suggested article (best first): the suggestion, the article, its past incidents
    (the ones it fixed first, newest first; at most :data:`PAST_INCIDENTS`) and whether there
    are more. None for a role without suggestions (a customer gets guided steps instead)."""
    if not permissions.allows(user, Capability.READ_SUGGESTIONS):
        return None
    found = await suggest.suggestions(session, user, incident_id, limit=SUGGESTIONS)
    reader = permissions.check(user, Capability.READ_KNOWLEDGE)
    out = []
    for item in found:
        article = await knowledge_service.get_article(session, reader, item.article_id)
        links = await knowledge_service.linked_incidents(session, item.article_id)
        past = sorted(
            (link for link in links if link.incident_id != incident_id),
            key=lambda link: (not link.fixed, -link.created_at.timestamp()),
        )
        out.append(
            {"s": item, "article": article, "past": past[:PAST_INCIDENTS], "more": len(past) > PAST_INCIDENTS}
        )
    return out


async def similar_for(
    session: AsyncSession, user: Principal, incident: Incident
) -> list[SimilarIncident] | None:
    """Resolved incidents like this one, beside the articles (None for a role without suggestions)."""
    if not permissions.allows(user, Capability.READ_SUGGESTIONS):
        return None
    return await similar_incidents(session, user, incident, limit=PAST_INCIDENTS)
