"""The WebSocket connections this chat server process holds."""

from __future__ import annotations

from typing import Protocol


class LocalDevice(Protocol):
    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None: ...


class LocalConnections:
    """device_id -> consumer of every open connection in this process.
    Only the server's event loop changes it."""

    by_device: dict[str, LocalDevice] = {}

    @classmethod
    def count(cls) -> int:
        return len(cls.by_device)


def connection_opened(device_id: str, device: LocalDevice) -> None:
    LocalConnections.by_device[device_id] = device


def connection_closed(device_id: str) -> None:
    LocalConnections.by_device.pop(device_id, None)
