"""Service discovery: which chat server a client should connect to."""

from __future__ import annotations

from typing import Protocol

from django.conf import settings


class ServerDirectory(Protocol):
    async def assign(self, *, request_host: str, secure: bool) -> str | None:
        """The ws_url of the least-loaded live chat server, or None if none is live."""


class SingleServerDirectory:
    """The embedded default: the one server that answered the request."""

    async def assign(self, *, request_host: str, secure: bool) -> str | None:
        if settings.CHAT_PUBLIC_WS_URL:
            return settings.CHAT_PUBLIC_WS_URL
        scheme = "wss" if secure else "ws"
        return f"{scheme}://{request_host}/ws/chat/"
