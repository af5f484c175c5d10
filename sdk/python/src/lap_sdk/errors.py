"""Exceptions. Every failure the API reports is a `LapError` carrying its HTTP status, the API's
`error` message and its `hint`; the subclasses name the common statuses."""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "LapConnectionError",
    "LapError",
    "LapTimeoutError",
    "NotFoundError",
    "SessionFailedError",
]


class LapError(Exception):
    """An error of lap or of this SDK.

    `status` is the HTTP status of the response (0 when there was none), `message` the API's
    `error`, `hint` its `hint` (what to do about it), `body` the whole decoded error body."""

    def __init__(self, message: str, *, status: int = 0, hint: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.hint = hint
        self.body = body

    @property
    def code(self) -> int:
        """The HTTP status: lap's error envelope has no code of its own."""
        return self.status

    def __str__(self) -> str:
        text = self.message
        if self.status:
            text = f"{text} (HTTP {self.status})"
        if self.hint:
            text = f"{text}\nhint: {self.hint}"
        return text


class BadRequestError(LapError):
    """400: the request was malformed (a typo in a field, a bad value)."""


class AuthenticationError(LapError):
    """401: the master key is missing or wrong."""


class NotFoundError(LapError):
    """404: no such agent, session, file or route."""


class ConflictError(LapError):
    """409: the thing is in the wrong state (a session that is not ready, a name that is taken)."""


class LapConnectionError(LapError):
    """The server could not be reached (nothing listening, TLS failure, connection lost)."""


class LapTimeoutError(LapError):
    """A wait ran past its deadline (a session not ready in time, a silent stream)."""


class SessionFailedError(LapError):
    """A session being waited for ended `failed` or `dead` instead of becoming ready."""

    def __init__(self, message: str, *, session: Any, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.session = session


class ConfigError(LapError):
    """The client settings cannot be resolved (an unreadable config file, a key in the keyring)."""


_BY_STATUS: dict[int, type[LapError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
}


def from_response(status: int, body: bytes, method: str, url: str) -> LapError:
    """The exception for a non-2xx answer, from lap's `{"error": …, "hint": …}` envelope."""
    import json

    decoded: Any = None
    message = f"{method} {url} answered {status}"
    hint = None
    try:
        decoded = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        if text:
            message = f"{message}: {text[:500]}"
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        message = decoded["error"]
        hint = decoded.get("hint")
    return _BY_STATUS.get(status, LapError)(message, status=status, hint=hint, body=decoded)
