"""Tables, one module per domain. The schema itself is owned by the Alembic migrations in
``server/migrations``; these mappings must match them (``tests/server/test_migrations.py``
checks). Import from here (``from server.db.models import Device``): the modules are the
layout, this package is the interface, and importing it registers every table on
``Base.metadata``."""

from __future__ import annotations

from server.db.models.base import NAMING, Base, epoch
from server.db.models.commands import TERMINAL_STATES, Command, CommandReply, CommandState
from server.db.models.customers import Customer, DeviceAssignmentPeriod, Site
from server.db.models.fleet import Device, Event, Message, QuarantinedMessage, StatusRecord, TelemetrySample
from server.db.models.identity import ApiToken, AuditEntry, Role, TechnicianAssignment, User
from server.db.models.incidents import (
    Channel,
    DeviceState,
    Incident,
    IncidentEntry,
    IncidentKind,
    IncidentStatus,
    StateInterval,
    StateTracker,
    TransientFault,
)
from server.db.models.knowledge import Article, ArticleLink, ArticleState, ArticleType, SuggestionShown
from server.db.models.kpi import (
    KpiContractMonth,
    KpiEpisodeStart,
    KpiIncidentDirty,
    KpiIncidentMonth,
    KpiIncidentYear,
    KpiRollupDirty,
    KpiStateSegment,
)
from server.db.models.maintenance import Rule, RuleAlert, RuleState
from server.db.models.sessions import Guide, GuideRun, RemoteSession, SessionEntry, SessionState

__all__ = [
    "NAMING",
    "TERMINAL_STATES",
    "ApiToken",
    "Article",
    "ArticleLink",
    "ArticleState",
    "ArticleType",
    "AuditEntry",
    "Base",
    "Channel",
    "Command",
    "CommandReply",
    "CommandState",
    "Customer",
    "Device",
    "DeviceAssignmentPeriod",
    "DeviceState",
    "Event",
    "Guide",
    "GuideRun",
    "Incident",
    "IncidentEntry",
    "IncidentKind",
    "IncidentStatus",
    "KpiContractMonth",
    "KpiEpisodeStart",
    "KpiIncidentDirty",
    "KpiIncidentMonth",
    "KpiIncidentYear",
    "KpiRollupDirty",
    "KpiStateSegment",
    "Message",
    "QuarantinedMessage",
    "RemoteSession",
    "Role",
    "Rule",
    "RuleAlert",
    "RuleState",
    "SessionEntry",
    "SessionState",
    "Site",
    "StateInterval",
    "StateTracker",
    "StatusRecord",
    "SuggestionShown",
    "TechnicianAssignment",
    "TelemetrySample",
    "TransientFault",
    "User",
    "epoch",
]
