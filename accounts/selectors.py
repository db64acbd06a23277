from __future__ import annotations

import copy

from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from accounts.models import ApiToken
from accounts.services import token_digest
from chatsite.aio import off_loop
from chatsite.recent import Recent

# Token digest -> the active user it belonged to when last looked up. A
# deactivated user or a deleted token is refused within CHAT_AUTH_CACHE_SECONDS.
_recent_tokens: Recent[str, User] = Recent(
    ttl=lambda: settings.CHAT_AUTH_CACHE_SECONDS, size=lambda: settings.CHAT_AUTH_CACHE_SIZE
)


def recent_user_for_token(token: str) -> User | None:
    """The user ``user_for_token`` answered for this token within
    ``CHAT_AUTH_CACHE_SECONDS``, or None; never queries (safe on an event loop)."""
    if not token:
        return None
    cached = _recent_tokens.get(token_digest(token))
    # A copy: callers may set attributes on the user of their request.
    return copy.copy(cached) if cached is not None else None


def user_for_token(token: str) -> User | None:
    """The active user a bearer token belongs to, or None.

    An answer is reused for up to ``CHAT_AUTH_CACHE_SECONDS`` (only valid
    tokens are remembered), so API calls do not query the database each time.
    """
    if not token:
        return None
    cached = recent_user_for_token(token)
    if cached is not None:
        return cached
    digest = token_digest(token)
    api_token = ApiToken.objects.select_related("user").filter(digest=digest).first()
    if api_token is None or not api_token.user.is_active:
        return None
    # Updated at most once a minute, to keep token checks read-mostly.
    now = timezone.now()
    if api_token.last_used_at is None or (now - api_token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
    _recent_tokens.put(digest, copy.copy(api_token.user))
    return api_token.user


async def auser_for_token(token: str) -> User | None:
    """``user_for_token`` for async callers: a remembered answer without
    leaving the event loop, otherwise the lookup on the I/O pool."""
    return recent_user_for_token(token) or await off_loop(user_for_token)(token)


def tokens_forget() -> None:
    """Drop every remembered token of this process (tests that reuse a token's user after a change)."""
    _recent_tokens.clear()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
