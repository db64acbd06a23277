"""Account writes: sign-up and API tokens."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.models import ApiToken
from messaging.errors import BadRequest, ChatError

USERNAME_MAX_CHARS = 150


class UsernameTaken(ChatError):
    code = "username_taken"
    http_status = 409


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_issue(*, user: User) -> str:
    """A new bearer token for the user; only its digest is stored."""
    token = secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, digest=token_digest(token))
    return token


def user_signup(*, username: str, password: str) -> User:
    if not username or len(username) > USERNAME_MAX_CHARS:
        raise BadRequest(f"username must be 1 to {USERNAME_MAX_CHARS} characters")
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError as exc:
        raise BadRequest("username may contain only letters, digits and @/./+/-/_") from exc
    candidate = User(username=username)
    try:
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise BadRequest(" ".join(exc.messages)) from exc
    if User.objects.filter(username__iexact=username).exists():
        raise UsernameTaken("that username is taken")
    try:
        with transaction.atomic():
            return User.objects.create_user(username=username, password=password)
    except IntegrityError as exc:
        raise UsernameTaken("that username is taken") from exc
