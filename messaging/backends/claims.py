"""Claim registries: where concurrent and quick retries of one
(sender, client_msg_id) agree on its message id before the store has it.

The store keeps every binding for good (written with the message); a registry
keeps one only for ``CHAT_CLAIM_TTL_SECONDS``, which must exceed the time a
message can spend between the gateway's ack and the store (dispatch lag).
"""

from __future__ import annotations

import uuid

from django.conf import settings

from chatsite.recent import Recent
from chatsite.redis_clients import resp_redis
from messaging.backends.base import Claim


class InProcessClaimRegistry:
    """The embedded default's registry: one process holds every connection,
    and nothing awaits between the look and the bind, so it is atomic on the
    event loop. Bounded by age and by count."""

    def __init__(self) -> None:
        self._claims: Recent[tuple[int, str], Claim] = Recent(
            ttl=lambda: settings.CHAT_CLAIM_TTL_SECONDS, size=lambda: settings.CHAT_CLAIM_REGISTRY_SIZE
        )

    async def claim(self, *, sender_id: int, client_msg_id: str, claim: Claim) -> Claim | None:
        key = (sender_id, client_msg_id)
        held = self._claims.get(key)
        if held is not None:
            return held
        self._claims.put(key, claim)
        return None

    def clear(self) -> None:
        """Forget every binding, as a restart would (tests)."""
        self._claims.clear()


class RedisClaimRegistry:
    """The real engines' registry: ``SET key value NX GET EX ttl`` in Redis,
    one round trip that either binds or answers the binding (Redis >= 7.0)."""

    def _key(self, sender_id: int, client_msg_id: str) -> str:
        return f"{settings.CHAT_REDIS_PREFIX}:claim:{sender_id}:{client_msg_id}"

    async def claim(self, *, sender_id: int, client_msg_id: str, claim: Claim) -> Claim | None:
        previous = await resp_redis().execute(
            "SET",
            self._key(sender_id, client_msg_id),
            _encode(claim),
            "NX",
            "GET",
            "EX",
            settings.CHAT_CLAIM_TTL_SECONDS,
        )
        if previous is None:
            return None
        assert isinstance(previous, str)
        return _decode(previous)


def _encode(claim: Claim) -> str:
    return f"{claim.message_id}:{claim.chat_id}"


def _decode(value: str) -> Claim:
    message_id, _, chat_id = value.partition(":")
    return Claim(message_id=uuid.UUID(message_id), chat_id=int(chat_id))
