"""Delivery to live devices through the channel layer.

The channel layer is at-most-once and drops past capacity; a device that
misses a frame here catches up from the history. Frames are serialised once
and the same text goes to every device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from presence.registry import Connection

logger = logging.getLogger(__name__)

# Channel-layer event types; the consumer has one handler for each.
CHAT_MESSAGE_EVENT = "chat.message"
CHAT_TYPING_EVENT = "chat.typing"
CHAT_READ_EVENT = "chat.read"
PRESENCE_UPDATE_EVENT = "presence.update"


def encode_frame(frame: Mapping[str, Any]) -> str:
    return orjson.dumps(frame).decode()


async def deliver_frame(connections: Iterable[Connection], *, event_type: str, frame: Mapping[str, Any]) -> int:
    """Send one frame to each device; return how many the layer accepted."""
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    event = {"type": event_type, "text": encode_frame(frame)}
    accepted = 0
    for connection in connections:
        try:
            await layer.send(connection.channel_name, event)
        except ChannelFull:
            # A device that stopped reading; it catches up from history.
            logger.warning("channel %s is full; dropped a %s frame", connection.channel_name, event_type)
            continue
        accepted += 1
    return accepted
