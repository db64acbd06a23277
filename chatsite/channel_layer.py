"""channels-redis with fewer round trips for the chat servers' inboxes.

``send``: channels-redis 4.3 sends to a channel with four sequential Redis
commands (drop expired, count, add, set expiry): four round trips for every
fan-out event a dispatcher hands a chat server. This layer runs the same four
steps as one Lua script, so the data in Redis and the capacity rule are
exactly channels-redis's own.

``receive_batch``: channels-redis's ``receive`` on a general channel costs four
round trips and a task per message, because it parks each message in a backup
queue until the receiver has it, so a cancelled receive loses nothing. A chat
server's inbox reader instead sends one ``BZMPOP`` (Redis >= 7.0): wait for
an event, and take everything else queued with it, in one command. It gives
up the backup: events a server popped and had not written to its sockets when
it died are lost. Those sockets die with it, and their devices catch up from
history when they reconnect, as they must anyway.

Both go through the lean client (chatsite.resp_client), which costs a
quarter of redis-py's CPU per command; the inbox reader on a connection of
its own, because ``BZMPOP`` holds its connection while it waits.
Process-local channels (``name!suffix``) and groups keep the stock paths,
and so does a host configured by anything other than an ``address`` URL.
"""

from __future__ import annotations

import time
from typing import Any

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from chatsite.redis_clients import close_resp_redis, resp_redis
from chatsite.resp_client import RespClient, Script

# KEYS[1]: the channel's sorted set. ARGV: expired-before score, capacity,
# message, now, expiry seconds. Returns 0 when the channel is full.
_SEND = Script(
    """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
)


class OneTripRedisChannelLayer(RedisChannelLayer):
    def _address(self, index: int) -> str | None:
        """Host ``index``'s URL, or None when it is configured some other way
        (it then keeps redis-py)."""
        address = self.hosts[index].get("address")
        if isinstance(address, str) and address.startswith(("redis://", "rediss://")):
            return address
        return None

    def _lean(self, index: int, *, blocking: bool = False) -> RespClient | None:
        """The lean client of host ``index`` on the running loop, or None."""
        address = self._address(index)
        return resp_redis(url=address, decode=False, blocking=blocking) if address is not None else None

    async def close_pools(self) -> None:
        await super().close_pools()
        for index in range(self.ring_size):
            address = self._address(index)
            if address is not None:
                await close_resp_redis(address)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if "!" in channel:
            await super().send(channel, message)
            return
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        index = next(self._send_index_generator)
        now = time.time()
        args = [int(now) - int(self.expiry), self.get_capacity(channel), self.serialize(message), now, int(self.expiry)]
        lean = self._lean(index)
        if lean is not None:
            accepted = await lean.run_script(_SEND, [self.prefix + channel], args)
        else:
            accepted = await self.connection(index).eval(_SEND.source, 1, self.prefix + channel, *args)
        if not accepted:
            raise ChannelFull()

    async def receive_batch(self, channel: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` messages of a general channel, oldest first; waits
        (``brpop_timeout`` at a time) while there are none."""
        assert "!" not in channel, "receive_batch is for general channels"
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        key = self.prefix + channel
        index = next(self._receive_index_generator)
        lean = self._lean(index, blocking=True)
        if lean is None:
            return await self._receive_batch_pipelined(key, index, limit)
        while True:
            popped = await lean.execute(
                "BZMPOP",
                self.brpop_timeout,
                1,
                key,
                "MIN",
                "COUNT",
                limit,
                timeout=self.brpop_timeout + settings.CHAT_REDIS_TIMEOUT_SECONDS,
            )
            if popped is not None:
                _, members = popped
                return [self.deserialize(member) for member, _ in members]

    async def _receive_batch_pipelined(self, key: str, index: int, limit: int) -> list[dict[str, Any]]:
        connection = self.connection(index)
        while True:
            # One round trip: Redis runs the ZPOPMIN right after the BZPOPMIN
            # returns, so it takes whatever else queued up meanwhile.
            pipe = connection.pipeline(transaction=False)
            pipe.bzpopmin(key, timeout=self.brpop_timeout)
            pipe.zpopmin(key, limit - 1)
            first, rest = await pipe.execute()
            if first is not None:
                _, member, _ = first
                return [self.deserialize(member)] + [self.deserialize(queued) for queued, _ in rest]
