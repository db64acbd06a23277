"""Backend selection: the implementations named in ``settings.CHAT_BACKENDS``."""

from __future__ import annotations

import logging
import threading
import time
from functools import cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from messaging.backends.base import ClaimRegistry, MessageBus, MessageStore

logger = logging.getLogger(__name__)


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


# What a chat server connects at start: a send uses both.
CHAT_SERVER_BACKENDS = ("message_store", "message_bus")


def warm_up_backends(roles: tuple[str, ...] = CHAT_SERVER_BACKENDS) -> dict[str, str]:
    """Connect these backends now instead of on the first request that needs
    them (a Cassandra session takes a few hundred milliseconds to open).
    A backend that cannot connect is logged and left to connect on first
    use, so a server still starts while one is down. Returns, per role,
    how long it took or why it failed."""
    outcomes: dict[str, str] = {}
    for role in roles:
        began = time.perf_counter()
        try:
            _backend(role).warm_up()
        except Exception as exc:
            logger.warning("%s not ready at start (%r); it connects on first use", role, exc)
            outcomes[role] = f"failed: {exc!r}"
        else:
            outcomes[role] = f"ready in {(time.perf_counter() - began) * 1000:.0f} ms"
    logger.info("backends warmed up: %s", ", ".join(f"{role} {outcome}" for role, outcome in outcomes.items()))
    return outcomes


def warm_up_backends_in_background(roles: tuple[str, ...] = CHAT_SERVER_BACKENDS) -> threading.Thread:
    """``warm_up_backends`` on a thread of its own, so a server listens at
    once. The backends are made here first: a request arriving meanwhile
    waits for the same connection instead of opening a second one."""
    for role in roles:
        _backend(role)
    thread = threading.Thread(target=warm_up_backends, args=(roles,), name="backend-warm-up", daemon=True)
    thread.start()
    return thread
