"""The JSON API's plumbing: authentication, body parsing, error mapping.

Every API answer is JSON; errors have the protocol's shape
``{"error": {"code", "message"}}``, never an HTML page or a traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, cast

import orjson
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from accounts.selectors import auser_for_token, bearer_token, user_for_token
from messaging.errors import BadRequest, ChatError, NotAuthenticated

logger = logging.getLogger(__name__)

P = ParamSpec("P")


def scope_header(scope: dict[str, Any], name: bytes) -> str | None:
    """A request header from an ASGI scope (``name`` in lower case), or None."""
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin1")
    return None


def json_response(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


def error_response(code: str, message: str, status: int) -> HttpResponse:
    return json_response({"error": {"code": code, "message": message}}, status=status)


def parse_json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    def no_view(_: HttpRequest) -> HttpResponse:
        return HttpResponse()

    return CsrfViewMiddleware(no_view).process_view(request, no_view, (), {})


def api_view(
    *, methods: set[str], auth: bool = True
) -> Callable[
    [Callable[Concatenate[HttpRequest, P], HttpResponse]], Callable[Concatenate[HttpRequest, P], HttpResponse]
]:
    """Wrap an API view: method check, bearer-or-session auth, error mapping.

    Bearer requests skip CSRF (no ambient credentials); browser requests that
    ride on the session cookie must carry the CSRF token.
    """

    def decorate(
        view: Callable[Concatenate[HttpRequest, P], HttpResponse],
    ) -> Callable[Concatenate[HttpRequest, P], HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
            if request.method not in methods:
                return error_response("method_not_allowed", f"use {' or '.join(sorted(methods))}", 405)
            try:
                if auth:
                    token = bearer_token(request.headers.get("Authorization"))
                    if token is not None:
                        user = user_for_token(token)
                        if user is None:
                            raise NotAuthenticated("the bearer token is not valid")
                        request.user = user
                    elif isinstance(request.user, AnonymousUser) or not request.user.is_authenticated:
                        raise NotAuthenticated("send Authorization: Bearer <token> or log in")
                    elif request.method not in {"GET", "HEAD", "OPTIONS"} and _csrf_failure(request):
                        return error_response("csrf_failed", "the CSRF token is missing or wrong", 403)
                return view(request, *args, **kwargs)
            except ChatError as error:
                return error_response(error.code, error.message, error.http_status)

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return cast(Callable[Concatenate[HttpRequest, P], HttpResponse], wrapper)

    return decorate


def async_api_view(
    *, methods: set[str]
) -> Callable[
    [Callable[Concatenate[HttpRequest, P], Coroutine[Any, Any, HttpResponse]]],
    Callable[Concatenate[HttpRequest, P], Coroutine[Any, Any, HttpResponse]],
]:
    """``api_view`` for an async view (hot read paths): the same method check,
    authentication and error mapping, without tying the request to a thread.

    Django runs a sync view on a thread made for its request, so a database
    connection cannot outlive the request: every call opened a new one. An
    async view does its blocking work through ``chatsite.aio.off_loop``, whose
    long-lived threads keep their connections (``CONN_MAX_AGE``). Only safe
    methods are allowed: unsafe ones need ``api_view``'s CSRF check.
    """
    if not methods <= {"GET", "HEAD", "OPTIONS"}:
        raise ValueError("async_api_view serves safe methods only")

    def decorate(
        view: Callable[Concatenate[HttpRequest, P], Coroutine[Any, Any, HttpResponse]],
    ) -> Callable[Concatenate[HttpRequest, P], Coroutine[Any, Any, HttpResponse]]:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
            if request.method not in methods:
                return error_response("method_not_allowed", f"use {' or '.join(sorted(methods))}", 405)
            try:
                token = bearer_token(request.headers.get("Authorization"))
                if token is not None:
                    user = await auser_for_token(token)
                    if user is None:
                        raise NotAuthenticated("the bearer token is not valid")
                    request.user = user
                else:
                    session_user = await request.auser()
                    if not isinstance(session_user, User) or not session_user.is_authenticated:
                        raise NotAuthenticated("send Authorization: Bearer <token> or log in")
                    request.user = session_user
                return await view(request, *args, **kwargs)
            except ChatError as error:
                return error_response(error.code, error.message, error.http_status)

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return cast(Callable[Concatenate[HttpRequest, P], Coroutine[Any, Any, HttpResponse]], wrapper)

    return decorate


def request_user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User), "api_view(auth=True) sets a real user"
    return user


class ApiErrorMiddleware:
    """Under /api/, turn Django's HTML 404s and unhandled exceptions into JSON."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code == 404
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            return error_response("not_found", "no such endpoint", 404)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith("/api/"):
            return None
        logger.exception("API request %s %s failed", request.method, request.path, exc_info=exception)
        return error_response("internal_error", "the server failed to handle this request", 500)
