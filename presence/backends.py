"""The presence-side backends chosen in ``settings.CHAT_BACKENDS``."""

from __future__ import annotations

from messaging.backends import backend
from presence.directory import ServerDirectory
from presence.registry import SessionRegistry


def session_registry() -> SessionRegistry:
    registry: SessionRegistry = backend("session_registry")
    return registry


def server_directory() -> ServerDirectory:
    directory: ServerDirectory = backend("server_directory")
    return directory
