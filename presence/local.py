"""What this chat server process knows about itself."""

from __future__ import annotations


class LocalConnections:
    """Live WebSocket connections in this process, reported in the server
    heartbeat. Only the server's event loop changes it."""

    count = 0


def connection_opened() -> None:
    LocalConnections.count += 1


def connection_closed() -> None:
    LocalConnections.count -= 1
