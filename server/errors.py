"""Exception tree of the server. Services raise these; the API maps them to HTTP in one place.

    ServerError
    ├── ConfigError        a setting that cannot work; names the setting
    ├── NotFound           a device, command, user or token that does not exist
    ├── Unauthorized       no token, unknown token, expired or revoked token
    ├── Forbidden          authenticated, but the role does not allow it
    ├── Conflict           the request clashes with the current state
    ├── InvalidInput       a value is wrong; names the field
    └── Unavailable        a dependency (broker, signing key) is not there right now

Every error has a stable ``code`` (for clients) and an HTTP ``status``; ``str()`` is one line.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "ServerError",
    "Unauthorized",
    "Unavailable",
]


class ServerError(Exception):
    code = "server_error"
    status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(message)


class ConfigError(ServerError):
    code = "config_error"

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"setting {setting}: {problem}", field=setting)


class NotFound(ServerError):
    code = "not_found"
    status = 404

    def __init__(self, what: str, ident: object) -> None:
        self.what = what
        self.ident = ident
        super().__init__(f"{what} {ident!r} not found")


class Unauthorized(ServerError):
    code = "unauthorized"
    status = 401


class Forbidden(ServerError):
    code = "forbidden"
    status = 403


class Conflict(ServerError):
    code = "conflict"
    status = 409


class InvalidInput(ServerError):
    code = "invalid_input"
    status = 422


class Unavailable(ServerError):
    code = "unavailable"
    status = 503
