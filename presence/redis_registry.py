"""The session registry and service discovery in Redis (the real engines).

Keys (prefix ``CHAT_REDIS_PREFIX``, default ``chat``):
- ``{p}:devices:{user_id}``  hash  device_id -> "server_id|unix time of last sign of life"
- ``{p}:last_seen``          hash  user_id -> unix time
- ``{p}:servers``            zset  server_id scored by its last heartbeat
- ``{p}:server:{server_id}`` hash  ws_url, connections   (expires: a dead server vanishes)

A device entry older than the presence timeout belongs to a connection whose
chat server died without saying goodbye; lookups ignore it and prune it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from django.conf import settings

from chatsite.redis_clients import async_redis, resp_redis
from chatsite.resp_client import Script
from presence.registry import Connection


def _key(*parts: object) -> str:
    return ":".join([settings.CHAT_REDIS_PREFIX, *map(str, parts)])


def _entry(connection: Connection, now: float) -> str:
    return f"{connection.server_id}|{now:.3f}"


# Every user's device hash in one command: a dispatcher looks up all the
# recipients of a batch at once, and a pipeline of one HGETALL per user cost
# redis-py's per-command overhead for each of them.
_DEVICES_OF = Script(
    """
local found = {}
for i, key in ipairs(KEYS) do
    found[i] = redis.call('HGETALL', key)
end
return found
"""
)
_LOOKUP_KEYS_PER_CALL = 1000


class RedisSessionRegistry:
    async def register(self, connection: Connection) -> int:
        now = time.time()
        key = _key("devices", connection.user_id)
        pipe = async_redis().pipeline(transaction=True)
        pipe.hset(key, connection.device_id, _entry(connection, now))
        pipe.expire(key, settings.CHAT_PRESENCE_TIMEOUT_SECONDS * 2)
        pipe.hset(_key("last_seen"), str(connection.user_id), f"{now:.3f}")
        pipe.hgetall(key)
        *_, devices = await pipe.execute()
        return len(self._live(devices, now))

    async def unregister(self, connection: Connection) -> int:
        now = time.time()
        key = _key("devices", connection.user_id)
        pipe = async_redis().pipeline(transaction=True)
        pipe.hdel(key, connection.device_id)
        pipe.hset(_key("last_seen"), str(connection.user_id), f"{now:.3f}")
        pipe.hgetall(key)
        *_, devices = await pipe.execute()
        return len(self._live(devices, now))

    async def touch(self, connection: Connection) -> None:
        await self.register(connection)

    async def lookup(self, user_ids: Iterable[int]) -> dict[int, list[Connection]]:
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        keys = [_key("devices", user_id) for user_id in users]
        replies: list[list[str]] = []
        # Redis serves nothing else while a script runs: bound each call.
        for start in range(0, len(keys), _LOOKUP_KEYS_PER_CALL):
            replies += await resp_redis().run_script(_DEVICES_OF, keys[start : start + _LOOKUP_KEYS_PER_CALL])
        now = time.time()
        found: dict[int, list[Connection]] = {}
        for user_id, flat in zip(users, replies, strict=True):
            live = self._live(dict(zip(flat[::2], flat[1::2], strict=True)), now)
            if live:
                found[user_id] = [
                    Connection(user_id=user_id, server_id=server_id, device_id=device_id)
                    for device_id, server_id in live.items()
                ]
        return found

    async def last_seen(self, user_ids: Iterable[int]) -> dict[int, float]:
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        values = await async_redis().hmget(_key("last_seen"), [str(u) for u in users])
        return {user_id: float(value) for user_id, value in zip(users, values, strict=True) if value is not None}

    @staticmethod
    def _live(devices: dict[str, str], now: float) -> dict[str, str]:
        """device_id -> server_id of the entries still within the presence timeout."""
        live = {}
        for device_id, entry in devices.items():
            server_id, _, stamp = entry.rpartition("|")
            if now - float(stamp) <= settings.CHAT_PRESENCE_TIMEOUT_SECONDS:
                live[device_id] = server_id
        return live


class RedisServerDirectory:
    """Least-loaded live chat server, from the servers' own heartbeats."""

    async def assign(self, *, request_host: str, secure: bool) -> str | None:
        client = async_redis()
        cutoff = time.time() - settings.CHAT_SERVER_TTL_SECONDS
        server_ids = await client.zrangebyscore(_key("servers"), cutoff, "+inf")
        if not server_ids:
            return None
        pipe = client.pipeline(transaction=False)
        for server_id in server_ids:
            pipe.hgetall(_key("server", server_id))
        best: tuple[int, str] | None = None
        for info in await pipe.execute():
            if not info or "ws_url" not in info:
                continue
            load = int(info.get("connections", 0))
            if best is None or load < best[0]:
                best = (load, info["ws_url"])
        return best[1] if best else None


def server_heartbeat(*, server_id: str, ws_url: str, connections: int) -> None:
    """Announce a chat server as live (called every few seconds by the server)."""
    from chatsite.redis_clients import sync_redis

    now = time.time()
    pipe = sync_redis().pipeline(transaction=True)
    pipe.hset(_key("server", server_id), mapping={"ws_url": ws_url, "connections": connections})
    pipe.expire(_key("server", server_id), max(1, int(settings.CHAT_SERVER_TTL_SECONDS)))
    pipe.zadd(_key("servers"), {server_id: now})
    pipe.zremrangebyscore(_key("servers"), "-inf", now - settings.CHAT_SERVER_TTL_SECONDS * 10)
    pipe.execute()


def server_deregister(*, server_id: str) -> None:
    from chatsite.redis_clients import sync_redis

    pipe = sync_redis().pipeline(transaction=True)
    pipe.delete(_key("server", server_id))
    pipe.zrem(_key("servers"), server_id)
    pipe.execute()
