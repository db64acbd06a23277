"""channels-redis with fewer round trips for the chat servers' inboxes.

``send``: channels-redis 4.3 sends to a channel with four sequential Redis
commands (drop expired, count, add, set expiry): four round trips for every
fan-out event a dispatcher hands a chat server. This layer runs the same four
steps as one Lua script, so the data in Redis and the capacity rule are
exactly channels-redis's own.

``receive_batch``: channels-redis's ``receive`` on a general channel costs four
round trips and a task per message, because it parks each message in a backup
queue until the receiver has it, so a cancelled receive loses nothing. A chat
server's inbox reader instead pipelines ``BZPOPMIN`` (wait for one) with
``ZPOPMIN`` (take the rest): one round trip for everything queued. It gives
up the backup: events a server popped and had not written to its sockets when
it died are lost. Those sockets die with it, and their devices catch up from
history when they reconnect, as they must anyway.

Process-local channels (``name!suffix``) keep the stock paths.
"""

from __future__ import annotations

import time
from typing import Any

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer

# KEYS[1]: the channel's sorted set. ARGV: expired-before score, capacity,
# message, now, expiry seconds. Returns 0 when the channel is full.
_SEND_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class OneTripRedisChannelLayer(RedisChannelLayer):
    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if "!" in channel:
            await super().send(channel, message)
            return
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        connection = self.connection(next(self._send_index_generator))
        now = time.time()
        accepted = await connection.eval(
            _SEND_LUA,
            1,
            self.prefix + channel,
            int(now) - int(self.expiry),
            self.get_capacity(channel),
            self.serialize(message),
            now,
            int(self.expiry),
        )
        if not accepted:
            raise ChannelFull()

    async def receive_batch(self, channel: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` messages of a general channel, oldest first; waits
        (``brpop_timeout`` at a time) while there are none."""
        assert "!" not in channel, "receive_batch is for general channels"
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        key = self.prefix + channel
        connection = self.connection(next(self._receive_index_generator))
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
