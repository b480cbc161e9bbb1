"""The console fixture of the HTTP tests: the app in-process on a seeded fleet (SQLite and
PostgreSQL through ``db_url``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.server import api_client, server_settings
from tests.web.seed import seed
from tests.web.support import Console


@pytest.fixture
async def console(tmp_path: object, db_url: str) -> AsyncIterator[Console]:
    settings = server_settings(db_url, incidents={"enabled": False})
    async with api_client(settings) as (client, runtime):
        yield Console(client, runtime, await seed(runtime))
