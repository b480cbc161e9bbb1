"""A local MQTT broker for ``fleetcare demo`` and tests, with production security semantics:
mutual TLS against the fleet CA, identity = certificate CN = username, the fleet topic ACL.

Mosquitto (a child process) when it is installed, amqtt (in-process) otherwise.
Guide: docs/embedded-broker.md.
"""

from server.embedded_broker.acl import FleetAcl, filter_covers, topic_matches
from server.embedded_broker.broker import BrokerKind, EmbeddedBroker, Preference, mosquitto_binary
from server.embedded_broker.errors import EmbeddedBrokerError

__all__ = [
    "BrokerKind",
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "FleetAcl",
    "Preference",
    "filter_covers",
    "mosquitto_binary",
    "topic_matches",
]
