from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import CommandSigner
from tests.agent.support import write_public_key


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def signer(signing_key: Ed25519PrivateKey) -> CommandSigner:
    return CommandSigner(signing_key)


@pytest.fixture
def server_key_file(signing_key: Ed25519PrivateKey, tmp_path: Path) -> Path:
    return write_public_key(signing_key, tmp_path / "signing.pub")
