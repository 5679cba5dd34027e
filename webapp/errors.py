"""Errors the services raise; the errors blueprint turns them into each audience's shape.

Messages are written for the person who sent the request: they say what was wrong
and, where it helps, what to do. They never contain a secret.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error that reaches a client with a deliberate status and message."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def to_dict(self) -> dict:
        """The OpenAI error shape, which every OpenAI client already knows how to read."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }


class InvalidRequest(GatewayError):
    """The request is malformed or a field is invalid; ``param`` names the field."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class AuthenticationFailed(GatewayError):
    """No credentials, or credentials that are not valid (401)."""

    status = 401
    type = "authentication_error"
    code = "missing_api_key"


class PermissionDenied(GatewayError):
    """Credentials present but wrong for this resource (403)."""

    status = 403
    type = "permission_error"
    code = "invalid_api_key"


class NotFound(GatewayError):
    """The thing asked for does not exist (404)."""

    status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(GatewayError):
    """The change would duplicate something that exists (409)."""

    status = 409
    type = "conflict_error"
    code = "already_registered"


class BackendUnavailable(GatewayError):
    """A backend could not be reached or answered wrongly (503)."""

    status = 503
    type = "backend_error"
    code = "backend_unavailable"
