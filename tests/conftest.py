"""Fixtures shared by every test package. Keep this small and generic."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certs import PkiDir, init_pki
from tests.support.broker import MosquittoBroker, find_mosquitto


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    """A fleet PKI (CA, broker, server identity, signing key, CRL) shared by the whole session.

    Tests that issue or revoke device certificates use unique device ids.
    """
    return init_pki(tmp_path_factory.mktemp("pki") / "pki")


@pytest.fixture
def broker(pki: PkiDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A real Mosquitto with mutual TLS and the fleet ACL, on a free port, stopped afterwards."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found (`make test` installs it; or apt-get install mosquitto)")
    with MosquittoBroker(pki, tmp_path_factory.mktemp("broker")) as running:
        yield running
