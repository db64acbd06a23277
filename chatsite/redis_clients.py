"""Redis clients, one pool per event loop (asyncio connections belong to the
loop that opened them) and one for synchronous code; and the lean client of
the hot paths (chatsite.resp_client), one connection per event loop."""

from __future__ import annotations

import asyncio
import weakref
from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings

from chatsite.resp_client import RespClient

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()
_resp_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, bool, bool], RespClient]] = (
    weakref.WeakKeyDictionary()
)


def async_redis() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(
            settings.CHAT_REDIS_URL,
            max_connections=settings.CHAT_REDIS_MAX_CONNECTIONS,
            socket_timeout=settings.CHAT_REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=settings.CHAT_REDIS_TIMEOUT_SECONDS,
            decode_responses=True,
        )
        _async_clients[loop] = client
    return client


@cache
def sync_redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.CHAT_REDIS_URL,
        max_connections=settings.CHAT_REDIS_MAX_CONNECTIONS,
        socket_timeout=settings.CHAT_REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=settings.CHAT_REDIS_TIMEOUT_SECONDS,
        decode_responses=True,
    )


def resp_redis(*, url: str | None = None, decode: bool = True, blocking: bool = False) -> RespClient:
    """The running loop's lean client of ``url`` (default ``CHAT_REDIS_URL``):
    text replies, or bytes with ``decode=False``. Blocking commands hold their
    connection while they wait, so they get a client of their own
    (``blocking=True``)."""
    loop = asyncio.get_running_loop()
    clients = _resp_clients.setdefault(loop, {})
    address = url or settings.CHAT_REDIS_URL
    key = (address, decode, blocking)
    client = clients.get(key)
    if client is None:
        client = RespClient.from_url(address, timeout=settings.CHAT_REDIS_TIMEOUT_SECONDS, decode=decode)
        clients[key] = client
    return client


async def close_resp_redis(url: str) -> None:
    """Close and forget the running loop's lean clients of ``url``."""
    clients = _resp_clients.get(asyncio.get_running_loop(), {})
    for key in [key for key in clients if key[0] == url]:
        await clients.pop(key).close()
