"""The chat servers' channel layer (chatsite.channel_layer) against the real
Redis: its one-round-trip send and batch receive keep channels-redis's data,
capacity rule and order, so stock channels-redis reads what it writes and the
other way round."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis
from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer

from chatsite.channel_layer import OneTripRedisChannelLayer

REDIS_URL = os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _host_by_parts() -> dict[str, object]:
    parts = urlsplit(REDIS_URL)
    return {"host": parts.hostname, "port": parts.port or 6379, "db": int(parts.path.strip("/") or 0)}


# An ``address`` URL takes the lean client (chatsite.resp_client); a host given
# by its parts keeps redis-py, through the same commands.
@pytest.fixture(params=["address", "parts"])
async def layers(request: pytest.FixtureRequest) -> AsyncIterator[tuple[OneTripRedisChannelLayer, RedisChannelLayer]]:
    prefix = f"layer-test-{uuid.uuid4().hex[:8]}:"
    host = {"address": REDIS_URL} if request.param == "address" else _host_by_parts()
    config = {"hosts": [{**host, "socket_timeout": 30}], "capacity": 5, "prefix": prefix}
    ours, stock = OneTripRedisChannelLayer(**config), RedisChannelLayer(**config)
    assert (ours._lean(0) is not None) == (request.param == "address")
    yield ours, stock
    await ours.close_pools()
    await stock.close_pools()
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)


def _event(n: int) -> dict[str, object]:
    return {"type": "server.fanout", "frames": [[f"frame {n}", ["device-a", "device-b"]]]}


async def test_a_send_past_capacity_is_refused_like_channels_redis(
    layers: tuple[OneTripRedisChannelLayer, RedisChannelLayer],
) -> None:
    ours, stock = layers
    for n in range(5):
        await ours.send("chatserver.a", _event(n))
    with pytest.raises(ChannelFull):
        await ours.send("chatserver.a", _event(5))
    with pytest.raises(ChannelFull):
        await stock.send("chatserver.a", _event(5))
    # Nothing was added by the refused sends, and the stock reader sees ours in order.
    assert [await stock.receive("chatserver.a") for _ in range(5)] == [_event(n) for n in range(5)]


async def test_receive_batch_takes_what_is_queued_oldest_first_up_to_the_limit(
    layers: tuple[OneTripRedisChannelLayer, RedisChannelLayer],
) -> None:
    ours, stock = layers
    for n in range(4):
        await stock.send("chatserver.b", _event(n))
    assert await ours.receive_batch("chatserver.b", 3) == [_event(0), _event(1), _event(2)]
    assert await ours.receive_batch("chatserver.b", 3) == [_event(3)]


async def test_receive_batch_waits_for_the_next_send(
    layers: tuple[OneTripRedisChannelLayer, RedisChannelLayer],
) -> None:
    ours, _ = layers
    waiting = asyncio.ensure_future(ours.receive_batch("chatserver.c", 10))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await ours.send("chatserver.c", _event(7))
    assert await asyncio.wait_for(waiting, timeout=5) == [_event(7)]
