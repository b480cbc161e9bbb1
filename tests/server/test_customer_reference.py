"""A customer named by name or by id (``server.base.users.resolve_customer``, behind ``kpi report
--customer``, ``create-user --customer``, ``assign``): exact name, then the name in another case,
then digits as an id; what fits two customers is refused naming both. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import customers
from server.base.users import resolve_customer
from server.errors import InvalidInput, NotFound


async def test_a_customer_by_name_or_id(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        ids = {}
        for name in ("Acme Hospital", "Borealis Labs", "BOREALIS LABS", "1", "Émile Clinic"):
            ids[name] = (await customers.create_customer(session, name=name, actor="test")).id
        acme, borealis, shouting, one = (
            ids[n] for n in ("Acme Hospital", "Borealis Labs", "BOREALIS LABS", "1")
        )
        assert acme == 1

        async def resolved(ref: str | int) -> int:
            return (await resolve_customer(session, ref)).id

        assert await resolved("Acme Hospital") == acme
        assert await resolved("acme HOSPITAL") == acme  # only one name fits, in any case
        assert await resolved(str(borealis)) == borealis
        assert await resolved(borealis) == borealis
        assert await resolved("Borealis Labs") == borealis  # an exact name wins over another case
        assert await resolved("BOREALIS LABS") == shouting
        assert await resolved("Émile Clinic") == ids["Émile Clinic"]
        assert await resolved(str(one)) == one  # digits that are nobody's name: the id

        with pytest.raises(InvalidInput) as folded:
            await resolve_customer(session, "borealis labs")
        assert str(folded.value) == (
            f"customer 'borealis labs' is ambiguous: it could be #{borealis} 'Borealis Labs', "
            f"#{shouting} 'BOREALIS LABS'; give the id"
        )
        with pytest.raises(InvalidInput) as digits:
            await resolve_customer(session, "1")  # the name of one, the id of another
        assert str(digits.value).startswith(f"customer '1' is ambiguous: it could be #{one} '1', #{acme} ")

        for unknown in ("Nobody", "999", "99999999999999999999", "²", 999):
            with pytest.raises(NotFound):
                await resolve_customer(session, unknown)
