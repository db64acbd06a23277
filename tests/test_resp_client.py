"""The lean Redis client of the hot paths (chatsite.resp_client) against the
real Redis: replies, errors, scripts, many callers on one connection, and
what happens when Redis is slow, drops the connection or is not there."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatsite.resp_client import RespClient, Script, pack_command

REDIS_URL = os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

Body = Callable[[RespClient], Coroutine[Any, Any, None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def on_loop(request: pytest.FixtureRequest) -> Callable[[Body], None]:
    """Run a test body with a fresh client on each loop the servers can run
    (chatsite.event_loop): their transports differ."""
    runner = uvloop.run if request.param == "uvloop" else asyncio.run

    def run(body: Body) -> None:
        async def with_client() -> None:
            client = RespClient.from_url(REDIS_URL, timeout=2.0)
            try:
                await body(client)
            finally:
                await client.close()

        runner(with_client())

    return run


@pytest.fixture
def key() -> Iterator[str]:
    name = f"resp-test:{uuid.uuid4().hex}"
    yield name
    redis.Redis.from_url(REDIS_URL).delete(name, f"{name}:other")


def test_replies_come_back_as_text_or_bytes(on_loop: Callable[[Body], None], key: str) -> None:
    async def body(client: RespClient) -> None:
        assert await client.execute("SET", key, "héllo", "EX", 60) == "OK"
        assert await client.execute("GET", key) == "héllo"
        assert await client.execute("GET", f"{key}:other") is None
        assert await client.execute("INCRBY", f"{key}:other", 41) == 41
        raw = RespClient.from_url(REDIS_URL, decode=False)
        try:
            assert await raw.execute("GET", key) == "héllo".encode()
        finally:
            await raw.close()

    on_loop(body)


def test_an_error_reply_raises_and_the_connection_goes_on(on_loop: Callable[[Body], None], key: str) -> None:
    async def body(client: RespClient) -> None:
        await client.execute("SET", key, "text")
        with pytest.raises(ResponseError, match="not an integer"):
            await client.execute("INCR", key)
        assert await client.execute("GET", key) == "text"

    on_loop(body)


def test_a_reply_that_is_not_utf8_text_fails_and_the_next_command_reconnects(
    on_loop: Callable[[Body], None], key: str
) -> None:
    redis.Redis.from_url(REDIS_URL).set(key, b"\xff\xfe")

    async def body(client: RespClient) -> None:
        with pytest.raises(RedisConnectionError, match="cannot be read"):
            await client.execute("GET", key)
        assert await client.execute("STRLEN", key) == 2

    on_loop(body)


def test_concurrent_callers_each_get_their_own_reply(on_loop: Callable[[Body], None], key: str) -> None:
    async def body(client: RespClient) -> None:
        replies = await asyncio.gather(*(client.execute("HINCRBY", key, f"field-{n}", n) for n in range(300)))
        assert replies == list(range(300))

    on_loop(body)


def test_a_script_runs_by_its_sha_and_is_sent_again_after_a_flush(on_loop: Callable[[Body], None], key: str) -> None:
    async def body(client: RespClient) -> None:
        script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        assert await client.run_script(script, [key], [5]) == 5
        assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
        await client.execute("SCRIPT", "FLUSH")
        assert await client.run_script(script, [key], [5]) == 10
        assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]

    on_loop(body)


def test_a_command_past_its_timeout_fails_and_the_next_one_reconnects(
    on_loop: Callable[[Body], None], key: str
) -> None:
    async def body(client: RespClient) -> None:
        began = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await client.execute("BLPOP", key, 5, timeout=0.2)
        assert time.monotonic() - began < 2
        assert await client.execute("PING") == "PONG"

    on_loop(body)


def test_commands_waiting_on_a_dropped_connection_fail_and_the_next_one_reconnects(
    on_loop: Callable[[Body], None], key: str
) -> None:
    async def body(client: RespClient) -> None:
        own_id = await client.execute("CLIENT", "ID")
        waiting = asyncio.create_task(client.execute("BLPOP", key, 5))
        await asyncio.sleep(0.1)
        redis.Redis.from_url(REDIS_URL).client_kill_filter(_id=own_id)
        with pytest.raises(RedisConnectionError, match="lost"):
            await waiting
        assert await client.execute("CLIENT", "ID") != own_id

    on_loop(body)


def test_an_unreachable_redis_is_a_connection_error(on_loop: Callable[[Body], None]) -> None:
    async def body(_client: RespClient) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free_port = probe.getsockname()[1]
        lean = RespClient(port=free_port, timeout=1.0)
        with pytest.raises(RedisConnectionError, match=f"cannot connect to Redis at 127.0.0.1:{free_port}"):
            await lean.execute("PING")

    on_loop(body)


def test_callers_waiting_for_a_connection_share_one_attempt(on_loop: Callable[[Body], None]) -> None:
    async def body(_client: RespClient) -> None:
        # Accepts connections (the kernel does) and never answers: the handshake's SELECT times out.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(100)
            port = silent.getsockname()[1]
            lean = RespClient.from_url(f"redis://127.0.0.1:{port}/1", timeout=0.3)
            began = time.monotonic()
            outcomes = await asyncio.gather(*(lean.execute("PING") for _ in range(20)), return_exceptions=True)
            assert all(isinstance(outcome, RedisTimeoutError) for outcome in outcomes)
            # One attempt's timeout for all twenty, not twenty in a row.
            assert time.monotonic() - began < 1.5

    on_loop(body)


def test_the_url_chooses_the_database_and_credentials_are_sent(on_loop: Callable[[Body], None]) -> None:
    async def body(client: RespClient) -> None:
        info = await client.execute("CLIENT", "INFO")
        assert f" db={REDIS_URL.rsplit('/', 1)[1]} " in info
        # This Redis has no password, so a client that sends one is refused at connect.
        with_password = RespClient.from_url(REDIS_URL.replace("redis://", "redis://:secret@"))
        with pytest.raises(ResponseError, match="AUTH"):
            await with_password.execute("PING")

    on_loop(body)


def test_urls_and_arguments_outside_the_protocol_are_refused() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RespClient.from_url("http://127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="a number"):
        RespClient.from_url("redis://127.0.0.1:6379/zero")
    with pytest.raises(DataError):
        pack_command(["SET", "k", True])
    with pytest.raises(DataError):
        pack_command(["SET", "k", None])  # type: ignore[list-item]
    assert pack_command(["SET", "k", 1.5, 2]) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n$1\r\n2\r\n"
