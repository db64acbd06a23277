from __future__ import annotations

from django.contrib.auth.models import User
from django.utils import timezone

from accounts.models import ApiToken
from accounts.services import token_digest


def user_for_token(token: str) -> User | None:
    """The active user a bearer token belongs to, or None."""
    if not token:
        return None
    api_token = ApiToken.objects.select_related("user").filter(digest=token_digest(token)).first()
    if api_token is None or not api_token.user.is_active:
        return None
    # Updated at most once a minute, to keep token checks read-mostly.
    now = timezone.now()
    if api_token.last_used_at is None or (now - api_token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
    return api_token.user


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
