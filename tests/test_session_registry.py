"""The session registry of the real engines (presence.redis_registry) against
the real Redis: a dispatcher's lookup of many recipients at once."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from django.test import override_settings

from presence.redis_registry import RedisSessionRegistry
from presence.registry import Connection

REDIS_URL = os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"registry-test-{uuid.uuid4().hex[:8]}"
    with override_settings(CHAT_REDIS_URL=REDIS_URL, CHAT_REDIS_PREFIX=name):
        yield name
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{name}:*"):
        client.delete(key)


async def test_a_lookup_finds_the_live_devices_of_many_users_and_skips_stale_ones(prefix: str) -> None:
    registry = RedisSessionRegistry()
    # More users than one lookup script call takes, so the lookup spans calls.
    users = list(range(1, 1502))
    for user_id in users:
        await registry.register(Connection(user_id=user_id, server_id="server-a", device_id=f"phone-{user_id}"))
    await registry.register(Connection(user_id=1500, server_id="server-b", device_id="laptop-1500"))
    # A device whose chat server died without unregistering it: its entry is
    # older than the presence timeout.
    redis.Redis.from_url(REDIS_URL).hset(f"{prefix}:devices:7", "tablet-7", f"server-c|{time.time() - 3600:.3f}")

    found = await registry.lookup([*users, 5000, 1500])

    assert sorted(found) == users
    assert sorted(found[1500], key=lambda connection: connection.device_id) == [
        Connection(user_id=1500, server_id="server-b", device_id="laptop-1500"),
        Connection(user_id=1500, server_id="server-a", device_id="phone-1500"),
    ]
    assert found[7] == [Connection(user_id=7, server_id="server-a", device_id="phone-7")]
    assert found[1] == [Connection(user_id=1, server_id="server-a", device_id="phone-1")]
    assert await registry.lookup([]) == {}
