"""Domain errors. Each carries the protocol's error code; interfaces map them
to an HTTP status or a WebSocket ``error`` frame."""

from __future__ import annotations


class ChatError(Exception):
    code = "internal_error"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ChatError):
    code = "bad_request"
    http_status = 400


class NotAuthenticated(ChatError):
    code = "not_authenticated"
    http_status = 401


class NotMember(ChatError):
    code = "not_member"
    http_status = 403


class ChatNotFound(ChatError):
    code = "not_found"
    http_status = 404


class UserNotFound(ChatError):
    code = "unknown_user"
    http_status = 400


class TooLarge(ChatError):
    code = "too_large"
    http_status = 400


class RateLimited(ChatError):
    code = "rate_limited"
    http_status = 429


class Unavailable(ChatError):
    code = "unavailable"
    http_status = 503
