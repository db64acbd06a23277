"""Backend selection: the implementations named in ``settings.CHAT_BACKENDS``."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from messaging.backends.base import ClaimRegistry, MessageBus, MessageStore


@cache
def _backend(role: str) -> Any:
    return import_string(settings.CHAT_BACKENDS[role])()


def message_store() -> MessageStore:
    store: MessageStore = _backend("message_store")
    return store


def message_bus() -> MessageBus:
    bus: MessageBus = _backend("message_bus")
    return bus


def claim_registry() -> ClaimRegistry:
    registry: ClaimRegistry = _backend("claim_registry")
    return registry


def backend(role: str) -> Any:
    return _backend(role)


def reset_backends() -> None:
    """Forget the chosen backends (tests that change settings call this)."""
    _backend.cache_clear()
