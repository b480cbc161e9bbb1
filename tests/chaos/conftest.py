"""Fixtures of the process-kill chaos tests (tests/chaos/test_process_kills.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certs import PkiDir
from tests.chaos.support_processes import SteadyBroker
from tests.support.broker import find_mosquitto


@pytest.fixture
def steady_broker(pki: PkiDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SteadyBroker]:
    """The ``broker`` fixture's Mosquitto, on a port no client's reconnect attempt can take
    while it is down (see :func:`tests.chaos.support_processes.steady_port`)."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found (`make test` installs it; or apt-get install mosquitto)")
    with SteadyBroker(pki, tmp_path_factory.mktemp("broker")) as running:
        yield running
