"""WebSocket handshake authentication.

A bearer token (``Authorization: Bearer``) wins; otherwise the Django session
cookie, which is only honoured when the Origin is one of our own hosts, so a
foreign page cannot ride on a visitor's cookie.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import validate_host

from accounts.selectors import auser_for_token, bearer_token
from chatsite.api import scope_header


def _origin_allowed(origin: str | None) -> bool:
    if origin is None:
        return True  # not a browser: no ambient cookie to abuse
    host = urlparse(origin).hostname
    return host is not None and validate_host(host, settings.ALLOWED_HOSTS)


class TokenOrSessionAuthMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session_auth = CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        token = bearer_token(scope_header(scope, b"authorization"))
        if token is not None:
            user = await auser_for_token(token)
            scope = dict(scope, user=user or AnonymousUser())
            return await self.inner(scope, receive, send)
        if not _origin_allowed(scope_header(scope, b"origin")):
            return await self.inner(dict(scope, user=AnonymousUser()), receive, send)
        return await self.session_auth(scope, receive, send)
