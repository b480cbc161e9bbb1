"""Incidents, equipment states and downtime accounting (docs/incidents.md).

- :mod:`server.incidents.engine` — the pure derivation of state intervals and episodes;
- :mod:`server.incidents.history` — a device's history as engine items (batch or database);
- :mod:`server.incidents.items` — history items placed on the server clock (skew);
- :mod:`server.incidents.sync` — storing the derivation;
- :mod:`server.incidents.evidence` — commands during incidents; resolution channels from evidence;
- :mod:`server.incidents.tracker` — :class:`IncidentTracker`: at ingest and by a sweeper;
- :mod:`server.incidents.service` — what people do with incidents;
- :mod:`server.base.priority` — the priority matrix.
"""

from server.incidents.tracker import IncidentTracker

__all__ = ["IncidentTracker"]
