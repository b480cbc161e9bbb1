"""The knowledge base (docs/knowledge.md): articles (technician, admin write; ops read;
customers read published customer-safe ones), search, and suggestions for an incident with the
one-step send of a suggested remote action into the technician's session."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server.api.deps import RuntimeDep, SessionDep, require_role
from server.api.params import Count, Id
from server.api.schemas import ActionName, CommandDetailPublic, Page
from server.api.sessions import service as session_service
from server.base.users import Principal
from server.db.models import ArticleState, ArticleType, Role
from server.errors import InvalidInput
from server.knowledge import service, suggest

__all__ = ["router"]

router = APIRouter(tags=["knowledge"])

Author = Annotated[Principal, require_role(Role.TECHNICIAN)]
Reader = Annotated[Principal, require_role(Role.TECHNICIAN, Role.OPS, Role.CUSTOMER)]
Staff = Annotated[Principal, require_role(Role.TECHNICIAN, Role.OPS)]
ArticleId = Annotated[Id, Path(description="Article id")]
IncidentId = Annotated[Id, Path(description="Incident id")]
Code = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Long = Annotated[str, StringConstraints(max_length=8192)]
Version = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class RemoteAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: ActionName
    args: dict[str, Any] = Field(default_factory=dict)


class ArticleFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)] | None = (
        None
    )
    type: ArticleType | None = None
    symptom: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8192)] | None
    ) = None
    cause: Long | None = None
    resolution: Long | None = None
    actions: list[RemoteAction] | None = Field(default=None, max_length=20)
    models: list[Code] | None = Field(default=None, max_length=100, description="Empty: any model")
    fault_codes: list[Code] | None = Field(default=None, max_length=100)
    firmware_min: Version | None = None
    firmware_max: Version | None = None
    customer_safe: bool | None = None

    def values(self) -> dict[str, Any]:
        out = self.model_dump(exclude_unset=True, mode="json")
        return {k: v for k, v in out.items() if not (v is None and k not in {"firmware_min", "firmware_max"})}


class ArticleCreate(ArticleFields):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
    symptom: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8192)]


class ArticleRetire(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Long = ""


class ArticleLinkPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    incident_id: int
    kind: str
    fixed: bool
    created_by: str
    created_at: datetime


class ArticlePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    type: str
    state: str
    symptom: str
    cause: str
    resolution: str
    actions: list[dict[str, Any]]
    models: list[str]
    fault_codes: list[str]
    firmware_min: str | None
    firmware_max: str | None
    signature: dict[str, float]
    customer_safe: bool
    use_count: int
    reuse_count: int
    success_count: int
    apply_count: int
    source_incident_id: int | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    retired_at: datetime | None
    last_used_at: datetime | None
    links: list[ArticleLinkPublic] | None = None  # detail, not for customers


class SuggestionPublic(BaseModel):
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
    reasons: list[str]


class SearchHitPublic(BaseModel):
    kind: str
    id: int
    title: str
    score: float
    snippet: str
    fault_codes: list[str]
    state: str


class ApplySuggestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    action_index: Count = Field(default=0, description="Which of the article's actions (0: the first)")
    timeout_s: float | None = Field(default=None, gt=0, le=86400)


def _public(article: Any, who: Principal, links: list[Any] | None = None) -> ArticlePublic:
    out = ArticlePublic.model_validate(article)
    if who.role is Role.CUSTOMER:  # the incidents and how often: staff matters
        out.signature, out.source_incident_id = {}, None
    elif links is not None:
        out.links = [ArticleLinkPublic.model_validate(link) for link in links]
    return out


@router.get("/knowledge/articles", response_model=Page[ArticlePublic])
async def list_articles(
    *,
    session: SessionDep,
    user: Reader,
    state: ArticleState | None = None,
    type: ArticleType | None = None,
    fault_code: Annotated[str | None, Query(max_length=256)] = None,
    model: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Count, Query()] = 0,
) -> Page[ArticlePublic]:
    """Articles, most successful first (customers: published customer-safe ones only)."""
    where = service.ArticleFilter(
        state=state.value if state else None,
        type=type.value if type else None,
        fault_code=fault_code,
        model=model,
    )
    rows, total = await service.list_articles(session, user, where, limit=limit, offset=offset)
    return Page(items=[_public(a, user) for a in rows], total=total, limit=limit, offset=offset)


@router.post("/knowledge/articles", status_code=201, response_model=ArticlePublic)
async def create_article(body: ArticleCreate, session: SessionDep, user: Author) -> ArticlePublic:
    """A new draft; publish it to have it suggested."""
    return _public(await service.create_article(session, user, body.values()), user, [])


@router.get("/knowledge/articles/{article_id}", response_model=ArticlePublic)
async def get_article(article_id: ArticleId, session: SessionDep, user: Reader) -> ArticlePublic:
    article = await service.get_article(session, user, article_id)
    return _public(article, user, await service.linked_incidents(session, article_id))


@router.patch("/knowledge/articles/{article_id}", response_model=ArticlePublic)
async def update_article(
    article_id: ArticleId, body: ArticleFields, session: SessionDep, user: Author
) -> ArticlePublic:
    article = await service.update_article(session, user, article_id, body.values())
    return _public(article, user, await service.linked_incidents(session, article_id))


@router.post("/knowledge/articles/{article_id}/publish", response_model=ArticlePublic)
async def publish(article_id: ArticleId, session: SessionDep, user: Author) -> ArticlePublic:
    """Draft → published: suggested from now on; customer-safe ones become guided steps."""
    article = await service.publish(session, user, article_id)
    return _public(article, user, await service.linked_incidents(session, article_id))


@router.post("/knowledge/articles/{article_id}/retire", response_model=ArticlePublic)
async def retire(
    article_id: ArticleId, session: SessionDep, user: Author, body: ArticleRetire | None = None
) -> ArticlePublic:
    """Never suggested or offered to customers again."""
    article = await service.retire(session, user, article_id, reason=body.reason if body else "")
    return _public(article, user, await service.linked_incidents(session, article_id))


@router.get("/knowledge/search", response_model=list[SearchHitPublic])
async def search(
    session: SessionDep,
    user: Reader,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="Words to look for")],
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[SearchHitPublic]:
    """Published articles and resolved incidents (in your scope) by text similarity."""
    hits = await suggest.search(session, user, q, limit=limit)
    return [SearchHitPublic.model_validate(hit.as_dict()) for hit in hits]


@router.get("/incidents/{incident_id}/suggestions", response_model=list[SuggestionPublic])
async def suggestions(
    incident_id: IncidentId,
    session: SessionDep,
    user: Staff,
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> list[SuggestionPublic]:
    """Published articles ranked for the incident, each with why it was chosen."""
    found = await suggest.suggestions(session, user, incident_id, limit=limit)
    return [SuggestionPublic.model_validate(item.as_dict()) for item in found]


@router.post(
    "/incidents/{incident_id}/suggestions/{article_id}/apply",
    status_code=201,
    response_model=CommandDetailPublic,
)
async def apply_suggestion(
    *,
    incident_id: IncidentId,
    article_id: ArticleId,
    body: ApplySuggestion,
    session: SessionDep,
    runtime: RuntimeDep,
    user: Author,
) -> CommandDetailPublic:
    """Send the article's remote action (the first unless ``action_index``) with its arguments
    into your active session on the incident's device; the use is counted on the article."""
    incident, item = await suggest.applicable(session, user, incident_id, article_id, body.action_index)
    svc = session_service(runtime)
    remote = await svc.get(user, body.session_id)
    if remote.device_id != incident.device_id:
        raise InvalidInput(
            f"session_id: session {remote.id} is on {remote.device_id}, the incident on {incident.device_id}",
            field="session_id",
        )
    await session.commit()  # release the read transaction before the command service writes
    command = await svc.run_command(
        user, remote.id, item["action"], item.get("args") or {}, timeout_s=body.timeout_s
    )
    await suggest.applied(
        session, user, incident_id, article_id, command_id=command.id, action=command.action
    )
    return CommandDetailPublic.model_validate(command)
