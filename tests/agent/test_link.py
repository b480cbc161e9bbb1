from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from agent import FatalLinkError, LinkDown, LinkError, LinkState
from agent.link import MqttLink
from agent.tls import LinkSSLContext, is_identity_refusal
from tests.agent.support import make_settings


def _link(tmp_path: Path, server_key_file: Path, **overrides: object) -> MqttLink:
    settings = make_settings(tmp_path, server_key_file=server_key_file, **overrides)  # type: ignore[arg-type]
    return MqttLink(settings, will=lambda: b"{}", on_connected=lambda: None)


def _from_none(exc: BaseException) -> aiomqtt.MqttError:
    """Build the MqttError aiomqtt raises: `raise MqttError(str(exc)) from None` inside `except`."""
    try:
        try:
            raise exc
        except BaseException as inner:
            raise aiomqtt.MqttError(str(inner)) from None
    except aiomqtt.MqttError as outer:
        return outer


def test_link_treats_connack_not_authorised_as_fatal(tmp_path: Path, server_key_file: Path) -> None:
    link = _link(tmp_path, server_key_file)
    error = link._translate(MqttConnectError(ReasonCode(2, identifier=135)), None)  # CONNACK packet type 2
    assert isinstance(error, FatalLinkError)
    assert "refused the identity" in str(error)


def test_link_treats_server_unavailable_as_retryable(tmp_path: Path, server_key_file: Path) -> None:
    link = _link(tmp_path, server_key_file)
    error = link._translate(MqttConnectError(ReasonCode(2, identifier=136)), None)
    assert type(error) is LinkError


def test_link_treats_untrusted_broker_certificate_as_fatal(tmp_path: Path, server_key_file: Path) -> None:
    link = _link(tmp_path, server_key_file)
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error = link._translate(_from_none(verify), None)
    assert isinstance(error, FatalLinkError)
    assert "fleet CA" in str(error)


def test_link_treats_revoked_client_certificate_seen_by_the_socket_as_fatal(
    tmp_path: Path, server_key_file: Path
) -> None:
    link = _link(tmp_path, server_key_file)
    ctx = LinkSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    revoked = ssl.SSLError(1, "[SSL: SSLV3_ALERT_CERTIFICATE_REVOKED] sslv3 alert certificate revoked")
    revoked.reason = "SSLV3_ALERT_CERTIFICATE_REVOKED"
    ctx.last_error = revoked
    error = link._translate(aiomqtt.MqttError("Operation timed out"), ctx)
    assert isinstance(error, FatalLinkError)
    assert "CERTIFICATE_REVOKED" in str(error)


def test_link_treats_refused_tcp_connection_as_retryable(tmp_path: Path, server_key_file: Path) -> None:
    link = _link(tmp_path, server_key_file)
    error = link._translate(_from_none(ConnectionRefusedError(111, "Connection refused")), None)
    assert type(error) is LinkError


def test_identity_refusal_ignores_unrelated_tls_errors() -> None:
    assert not is_identity_refusal(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"))
    assert not is_identity_refusal(None)
    assert is_identity_refusal(ssl.SSLCertVerificationError(1, "x"))


async def test_link_retries_with_backoff_while_the_broker_is_unreachable(
    tmp_path: Path, server_key_file: Path
) -> None:
    link = _link(tmp_path, server_key_file)
    seen: list[LinkState] = []
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        task = tg.create_task(link.run())
        for _ in range(3):
            await link.wait_for(LinkState.BACKING_OFF)
            seen.append(link.state)
            await link.wait_for(LinkState.CONNECTING)
        task.cancel()
    assert seen == [LinkState.BACKING_OFF] * 3
    assert link.state is LinkState.STOPPED
    with pytest.raises(LinkDown):
        await link.publish("fc/v1/d/dev-1/up/event", b"{}")


async def test_link_stops_on_fatal_error_and_wakes_waiters(tmp_path: Path, server_key_file: Path) -> None:
    tls = {
        "ca_file": tmp_path / "missing-ca.crt",
        "cert_file": tmp_path / "x.crt",
        "key_file": tmp_path / "x.key",
    }
    link = _link(tmp_path, server_key_file, tls=tls)
    async with asyncio.timeout(10):
        waiter = asyncio.create_task(link.wait_connected())
        with pytest.raises(FatalLinkError, match="cannot load the TLS files"):
            await link.run()
        with pytest.raises(FatalLinkError):
            await waiter
    assert link.state is LinkState.FAILED


async def test_link_keeps_retrying_fatal_errors_when_configured_to(
    tmp_path: Path, server_key_file: Path
) -> None:
    tls = {
        "ca_file": tmp_path / "missing-ca.crt",
        "cert_file": tmp_path / "x.crt",
        "key_file": tmp_path / "x.key",
    }
    link = _link(tmp_path, server_key_file, tls=tls, reconnect={"on_fatal": "retry", "max": 0.05})
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        task = tg.create_task(link.run())
        for _ in range(2):
            await link.wait_for(LinkState.BACKING_OFF)
            await link.wait_for(LinkState.CONNECTING)
        task.cancel()
    assert link.state is LinkState.STOPPED
