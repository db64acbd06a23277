"""Redis clients, one pool per event loop (asyncio connections belong to the
loop that opened them) and one for synchronous code."""

from __future__ import annotations

import asyncio
import weakref
from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


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
