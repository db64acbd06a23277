"""Delivery to live devices: one channel-layer event per chat server.

The dispatcher (or a service) groups the devices it delivers to by the chat
server that holds them and sends each server one ``server.fanout`` event with
every frame and its recipients' device ids, all servers at once. Each chat
server reads its own inbox channel, ``chatserver.<id>``, and writes the frames
to its local sockets. That is one layer send per server instead of one per
device.

The channel layer is at-most-once and drops past capacity; a device that
misses a frame catches up from the history. Frames are serialised once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings

from presence.backends import session_registry
from presence.local import LocalConnections
from presence.registry import Connection

logger = logging.getLogger(__name__)

FANOUT_EVENT = "server.fanout"
# How many fan-out events a chat server takes from its inbox at once.
INBOX_BATCH = 64
_UNSAFE_CHANNEL_CHARS = re.compile(r"[^a-zA-Z0-9\-_.]")

# One delivery: a frame (already JSON text) and the devices it goes to.
Delivery = tuple[str, Sequence[Connection]]
# What a chat server's inbox carries: frames with their recipients' device ids.
Frames = list[tuple[str, list[str]]]


def encode_frame(frame: Mapping[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def server_inbox(server_id: str) -> str:
    """The channel a chat server reads its fan-out events from."""
    return f"chatserver.{_UNSAFE_CHANNEL_CHARS.sub('_', server_id)}"


def _layer() -> BaseChannelLayer:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    return layer


async def deliver(deliveries: Iterable[Delivery]) -> int:
    """Send every frame to its devices; return how many device-frames the inboxes took."""
    per_server: dict[str, Frames] = defaultdict(list)
    for text, connections in deliveries:
        by_server: dict[str, list[str]] = defaultdict(list)
        for connection in connections:
            by_server[connection.server_id].append(connection.device_id)
        for server_id, device_ids in by_server.items():
            per_server[server_id].append((text, device_ids))
    # The servers' inboxes are written side by side: no server's frames wait for another's.
    sent = await asyncio.gather(
        *(_send_to_server(server_id, frames) for server_id, frames in per_server.items()),
        return_exceptions=True,
    )
    for outcome in sent:
        if isinstance(outcome, BaseException):
            raise outcome
    return sum(outcome for outcome in sent if isinstance(outcome, int))


async def _send_to_server(server_id: str, frames: Frames) -> int:
    if not await _inbox_put(server_id, frames):
        # That server is not keeping up; its devices catch up from history.
        logger.warning("inbox of chat server %s is full; dropped %d frames", server_id, len(frames))
        return 0
    return sum(len(device_ids) for _, device_ids in frames)


async def _inbox_put(server_id: str, frames: Frames) -> bool:
    """Queue one fan-out event for a chat server; False when its inbox is full."""
    try:
        await _layer().send(server_inbox(server_id), {"type": FANOUT_EVENT, "frames": frames})
    except ChannelFull:
        return False
    return True


async def deliver_frame(connections: Sequence[Connection], *, frame: Mapping[str, Any]) -> int:
    return await deliver([(encode_frame(frame), connections)])


def connections_of(devices: Mapping[int, Sequence[Connection]]) -> list[Connection]:
    """Every device of a registry lookup, flattened."""
    return [connection for user_devices in devices.values() for connection in user_devices]


async def deliver_to_users(user_ids: Iterable[int], *, frame: Mapping[str, Any]) -> int:
    """Send one frame to every live device of these users."""
    devices = await session_registry().lookup(user_ids)
    return await deliver_frame(connections_of(devices), frame=frame)


# --- the chat server's side ----------------------------------------------------

_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = weakref.WeakKeyDictionary()


def ensure_inbox_reader() -> None:
    """Start this process's inbox reader in the running loop, once."""
    loop = asyncio.get_running_loop()
    task = _inboxes.get(loop)
    if task is None or task.done():
        _inboxes[loop] = loop.create_task(_read_inbox(server_inbox(settings.CHAT_SERVER_ID)), name="chat-inbox")


async def _read_inbox(inbox: str) -> None:
    layer = _layer()
    while True:
        try:
            events = await _receive_events(layer, inbox)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The layer's backend is away (Redis restarting): wait and read again.
            logger.exception("reading the inbox %s failed", inbox)
            await asyncio.sleep(settings.CHAT_DISPATCH_RETRY_SECONDS)
            continue
        for event in events:
            if event.get("type") == FANOUT_EVENT:
                await _fan_out(event["frames"])


async def _receive_events(layer: BaseChannelLayer, inbox: str) -> list[dict[str, Any]]:
    """What is queued in the inbox (at least one event): in one round trip on
    layers that can (chatsite.channel_layer), one event at a time on the others."""
    receive_batch = getattr(layer, "receive_batch", None)
    if receive_batch is not None:
        events: list[dict[str, Any]] = await receive_batch(inbox, INBOX_BATCH)
        return events
    return [await layer.receive(inbox)]


async def _fan_out(frames: Frames) -> None:
    local = LocalConnections.by_device
    for text, device_ids in frames:
        for device_id in device_ids:
            device = local.get(device_id)
            if device is None:
                continue  # it disconnected since the registry lookup
            try:
                await device.send(text_data=text)
            except Exception:
                logger.warning("writing to %s failed", device_id, exc_info=True)
