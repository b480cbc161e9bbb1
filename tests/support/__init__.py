"""Test helpers shared across test packages (real brokers, TLS contexts)."""

from tests.support.broker import BrokerError, MosquittoBroker, find_mosquitto, tls_context, unique_device

__all__ = ["BrokerError", "MosquittoBroker", "find_mosquitto", "tls_context", "unique_device"]
