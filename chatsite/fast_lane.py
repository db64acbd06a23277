"""Hot API reads answered without Django's middleware chain.

Under ASGI, Django runs the middleware chain (sessions, CSRF, messages, ...)
on a thread made for each request and hops back to the event loop for an
async view: a thread start and several hops per request, about a third of
what a history page cost on the embedded default. A history page asked with
a bearer token needs none of those middlewares (no cookie, no session, no
form), so this ASGI wrapper hands such requests straight to the same async
view, with the same request object, validation, authentication, error
mapping and response headers. Everything else (other paths and methods, and
requests authenticated by the session cookie) goes through Django as before.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from accounts.selectors import bearer_token
from chatsite.api import error_response, scope_header
from messaging.views import api_chat_messages

logger = logging.getLogger(__name__)

AsyncView = Callable[..., Awaitable[HttpResponse]]

# (path pattern, view): the routes taken past the middleware chain. Each view
# must be an ``async_api_view`` (it authenticates and maps errors itself).
FAST_ROUTES: list[tuple[re.Pattern[str], AsyncView]] = [
    (re.compile(r"/api/chats/(?P<chat_id>[0-9]+)/messages"), api_chat_messages),
]


def _route(scope: dict[str, Any]) -> tuple[AsyncView, dict[str, int]] | None:
    if scope["type"] != "http" or scope.get("method") != "GET":
        return None
    if bearer_token(scope_header(scope, b"authorization")) is None:
        return None
    for pattern, view in FAST_ROUTES:
        match = pattern.fullmatch(scope.get("path", ""))
        if match is not None:
            return view, {name: int(value) for name, value in match.groupdict().items()}
    return None


def _not_called(request: HttpRequest) -> HttpResponse:
    raise AssertionError("the fast lane calls only the security middlewares' hooks")


async def _drain_body(receive: Callable[[], Awaitable[dict[str, Any]]]) -> bool:
    """Read the request to its end; False when the client went away."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        if not message.get("more_body", False):
            return True


class FastLane:
    """ASGI app: FAST_ROUTES asked with a bearer token go to their view
    directly; everything else to ``django_app``."""

    def __init__(self, django_app: Any, handler: ASGIHandler) -> None:
        self.django_app = django_app
        self.handler = handler
        # Django's own security middlewares, run through their hooks in the
        # order of the chain: HTTPS redirect, then the same response headers.
        self.security = SecurityMiddleware(_not_called)
        self.frame_options = XFrameOptionsMiddleware(_not_called)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        routed = _route(scope)
        if routed is None:
            await self.django_app(scope, receive, send)
            return
        if not await _drain_body(receive):
            return
        view, kwargs = routed
        request = ASGIRequest(scope, io.BytesIO())
        try:
            request.get_host()
            redirect = self.security.process_request(request)
            response = redirect if redirect is not None else await view(request, **kwargs)
        except DisallowedHost:
            response = error_response("bad_request", "this host is not served here", 400)
        except Exception:
            logger.exception("API request GET %s failed", scope.get("path"))
            response = error_response("internal_error", "the server failed to handle this request", 500)
        response = self.frame_options.process_response(request, response)
        response = self.security.process_response(request, response)
        await self.handler.send_response(response, send)
