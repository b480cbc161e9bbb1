"""The agent's TLS client context: fleet CA only, client certificate, TLS >= 1.2, hostname check.

:class:`LinkSSLContext` also remembers the last TLS error seen on any socket it made. Under
TLS 1.3 a broker rejects a revoked or unknown client certificate *after* the client's side of
the handshake completed; the alert then surfaces in the MQTT library's read loop, which only
logs it. The recorded error is how the link tells "this identity is refused" from "the broker
is unreachable".
"""

from __future__ import annotations

import ssl
from pathlib import Path

from agent.config import TlsSettings

__all__ = ["LinkSSLContext", "is_identity_refusal", "make_ssl_context"]

# OpenSSL alert/verify reasons that mean "this certificate (ours or the broker's) is not accepted".
_IDENTITY_REASONS = (
    "CERTIFICATE_VERIFY_FAILED",
    "CERTIFICATE_REVOKED",
    "CERTIFICATE_REQUIRED",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_UNKNOWN",
    "BAD_CERTIFICATE",
    "UNSUPPORTED_CERTIFICATE",
    "UNKNOWN_CA",
    "ACCESS_DENIED",
)


class _RecordingSSLSocket(ssl.SSLSocket):
    def _record(self, exc: ssl.SSLError) -> None:
        context = self.context
        if isinstance(context, LinkSSLContext) and not isinstance(
            exc, ssl.SSLWantReadError | ssl.SSLWantWriteError
        ):
            context.last_error = exc

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except ssl.SSLError as exc:
            self._record(exc)
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:
            self._record(exc)
            raise


class LinkSSLContext(ssl.SSLContext):
    last_error: ssl.SSLError | None = None


def make_ssl_context(tls: TlsSettings) -> LinkSSLContext:
    """Build a fresh context from the files (re-read at every connection: renewed certificates
    are picked up). Raises OSError / ssl.SSLError for unreadable or mismatched files."""
    ctx = LinkSSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode=CERT_REQUIRED, check_hostname=True
    ctx.sslsocket_class = _RecordingSSLSocket
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(Path(tls.ca_file)))
    ctx.load_cert_chain(certfile=str(Path(tls.cert_file)), keyfile=str(Path(tls.key_file)))
    return ctx


def is_identity_refusal(exc: BaseException | None) -> bool:
    """True for a TLS error that says a certificate was refused (by the broker or by us)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    if isinstance(exc, ssl.SSLError):
        text = f"{getattr(exc, 'reason', None) or ''} {exc}".upper()
        return any(reason in text for reason in _IDENTITY_REASONS)
    return False
