from __future__ import annotations

import asyncio
import inspect
import ssl
from pathlib import Path

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from agent import FatalLinkError, LinkDown, LinkError, LinkState
from agent.link import MqttLink, housekeeping
from agent.tls import LinkSSLContext, is_identity_refusal
from certs import PkiDir
from tests.agent.support import device_settings, make_settings
from tests.support.broker import MosquittoBroker, unique_device


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


def test_aiomqtt_still_has_the_housekeeping_hook_the_link_replaces() -> None:
    """agent.link overrides aiomqtt's private ``Client._misc_loop`` and
    ``_on_socket_register_write``; if an upgrade renamed them, every connection would quietly
    get its own once-a-second task again, and every publish its detour through the self-pipe."""
    assert inspect.iscoroutinefunction(aiomqtt.Client._misc_loop)
    assert callable(aiomqtt.Client._on_socket_register_write)


@pytest.mark.integration
async def test_idle_links_are_kept_alive_by_one_shared_housekeeping_timer(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    """Keepalive 5 s: Mosquitto drops a client it hears nothing from for 1.5 x keepalive (checked
    coarsely: without pings these links are dropped within the 15 s). Three
    idle links outlive that on their first connection, pinged by the shared timer (no task of
    their own), which is released when they stop."""
    links = []
    for _ in range(3):
        settings = device_settings(tmp_path, pki, broker, unique_device(pki, "hk"))
        settings = settings.model_copy(update={"broker": settings.broker.model_copy(update={"keepalive": 5})})
        links.append(MqttLink(settings, will=lambda: b"{}", on_connected=lambda: None))
    async with asyncio.timeout(30):
        runs = [asyncio.create_task(link.run()) for link in links]
        try:
            for link in links:
                await link.wait_connected()
            assert len(housekeeping()) == 3
            await asyncio.sleep(15)
            assert [(link.state, link.connections) for link in links] == [(LinkState.CONNECTED, 1)] * 3
        finally:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
    assert len(housekeeping()) == 0
