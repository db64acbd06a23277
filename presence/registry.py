"""The session registry: which devices of a user are connected, where.

A device is one WebSocket connection: the chat server holding it and an id
unique to the connection, which that server's inbox reader maps to its socket.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Connection:
    user_id: int
    server_id: str
    device_id: str


class SessionRegistry(Protocol):
    async def register(self, connection: Connection) -> int:
        """Add a device; return how many devices the user has now."""

    async def unregister(self, connection: Connection) -> int:
        """Remove a device; return how many devices the user has left."""

    async def touch(self, connection: Connection) -> None:
        """Record a heartbeat of a device."""

    async def lookup(self, user_ids: Iterable[int]) -> dict[int, list[Connection]]:
        """The live devices of each user that has any."""

    async def last_seen(self, user_ids: Iterable[int]) -> dict[int, float]:
        """Unix time each user was last seen (connected or heartbeating)."""


class InProcessSessionRegistry:
    """The embedded default: one chat server, so a dict in its memory."""

    def __init__(self) -> None:
        self._devices: dict[int, dict[str, Connection]] = defaultdict(dict)
        self._last_seen: dict[int, float] = {}

    async def register(self, connection: Connection) -> int:
        devices = self._devices[connection.user_id]
        devices[connection.device_id] = connection
        self._last_seen[connection.user_id] = time.time()
        return len(devices)

    async def unregister(self, connection: Connection) -> int:
        devices = self._devices.get(connection.user_id, {})
        devices.pop(connection.device_id, None)
        self._last_seen[connection.user_id] = time.time()
        if not devices:
            self._devices.pop(connection.user_id, None)
        return len(devices)

    async def touch(self, connection: Connection) -> None:
        self._last_seen[connection.user_id] = time.time()

    async def lookup(self, user_ids: Iterable[int]) -> dict[int, list[Connection]]:
        found: dict[int, list[Connection]] = {}
        for user_id in user_ids:
            devices = self._devices.get(user_id)
            if devices:
                found[user_id] = list(devices.values())
        return found

    async def last_seen(self, user_ids: Iterable[int]) -> dict[int, float]:
        return {user_id: self._last_seen[user_id] for user_id in user_ids if user_id in self._last_seen}
