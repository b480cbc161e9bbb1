"""``fleetcare server`` administration commands: tokens on stdout, errors as one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetcare.cli import main
from tests.support.cli import fleetcare_server as fleetcare


def test_create_user_token_and_revoke(tmp_path: Path) -> None:
    created = fleetcare(tmp_path, "create-user", "alice", "--role", "admin")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert len(token) >= 40
    assert "\n" not in token
    assert "shown once" in created.stderr

    again = fleetcare(tmp_path, "create-user", "alice")
    assert again.returncode == 2
    assert again.stderr.strip() == "error: user 'alice' already exists"

    second = fleetcare(tmp_path, "token", "alice", "--expires-days", "1")
    assert second.returncode == 0
    assert second.stdout.strip() != token

    revoked = fleetcare(tmp_path, "revoke-token", token)
    assert revoked.returncode == 0, revoked.stderr
    all_revoked = fleetcare(tmp_path, "revoke-token", "--user", "alice")
    assert "revoked 1 token(s)" in all_revoked.stderr

    unknown = fleetcare(tmp_path, "token", "nobody")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: user 'nobody' not found"


def test_bad_settings_exit_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLEETCARE_DATABASE_URL", "mysql://nope")
    with pytest.raises(SystemExit) as info:
        main(["server", "migrate"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: setting database_url: ")
    assert "\n" not in err


def test_tokens_are_prefixed_and_never_look_like_an_option(tmp_path: Path) -> None:
    for name in ("bob", "carol", "dave"):
        created = fleetcare(tmp_path, "create-user", name, "--role", "ops")
        assert created.returncode == 0, created.stderr
        assert created.stdout.strip().startswith("fct_")


def test_revoke_device_marks_it_revoked_once_and_names_an_unknown_device(tmp_path: Path) -> None:
    import asyncio  # noqa: PLC0415

    from server.db import create_engine, create_sessionmaker, run_migrations  # noqa: PLC0415
    from server.db.models import Device  # noqa: PLC0415

    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    run_migrations(url)

    async def add_device() -> None:
        engine = create_engine(url)
        async with create_sessionmaker(engine)() as session:
            session.add(Device(id="printer-9"))
            await session.commit()
        await engine.dispose()

    asyncio.run(add_device())
    first = fleetcare(tmp_path, "revoke-device", "printer-9", "--reason", "stolen")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("printer-9\trevoked_at=")
    again = fleetcare(tmp_path, "revoke-device", "printer-9")
    assert again.stdout == first.stdout  # idempotent: the first time stays
    unknown = fleetcare(tmp_path, "revoke-device", "ghost")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: device 'ghost' not found"
