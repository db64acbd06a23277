"""A small asyncio Redis client for the hot paths: one connection per client,
every command multiplexed on it in order.

redis-py's asyncio client costs about 200 us of CPU per command on uvloop
(connection checkout and release, retry and timeout wrappers, argument
filtering, observability hooks); this client about 50. At half the flood
rate a message pays for one or more Redis commands in every process it
passes through, one message at a time, so that overhead showed up in every
hop (docs/performance.md, tenth pass). The claim registry, the session
registry's lookup and the chat servers' inboxes use this client; everything
else keeps redis-py.

Redis answers the commands of one connection in the order it received them,
so concurrent callers share the connection: each write is queued with a
future, and replies resolve the futures first in, first out. A command that
gets no reply within its timeout aborts the connection (the replies after it
would be out of step), failing every command still waiting on it; the next
command connects again. Failures raise redis-py's exception classes, so the
callers' error handling does not depend on which client a path uses.
Blocking commands (``BZMPOP``) hold their connection until they return: give
them a client of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int | float


def pack_command(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bool):
            raise DataError("a bool is not a Redis argument; send 0 or 1")
        elif isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            raise DataError(f"a {type(arg).__name__} is not a Redis argument")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Script:
    """A Lua script run by its SHA1 (``EVALSHA``), sent whole only when the
    server does not know it (first use, or after a restart or ``SCRIPT FLUSH``)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Connection(asyncio.Protocol):
    def __init__(self, *, decode: bool) -> None:
        self._reader = hiredis.Reader(encoding="utf-8" if decode else None, replyError=ResponseError)
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except Exception as exc:  # not RESP, or text that is not UTF-8: the stream cannot be trusted
                self.abort(RedisConnectionError(f"Redis sent a reply that cannot be read: {exc!r}"))
                return
            if reply is False:
                return
            if not self._waiters:
                self.abort(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            waiter = self._waiters.popleft()
            if waiter.done():
                continue  # its caller was cancelled or timed out; the reply still had to be read
            if isinstance(reply, ResponseError):
                waiter.set_exception(_response_error(reply))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_waiting(RedisConnectionError(f"the connection to Redis was lost: {exc or 'closed by the server'}"))

    def _fail_waiting(self, error: Exception) -> None:
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def abort(self, error: Exception) -> None:
        self._fail_waiting(error)
        if self._transport is not None:
            self._transport.abort()

    async def request(self, payload: bytes, timeout: float) -> Any:
        if self.closed or self._transport is None:
            raise RedisConnectionError("the connection to Redis is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiters.append(waiter)
        self._transport.write(payload)
        expiry = loop.call_later(timeout, self._time_out, waiter, timeout)
        try:
            return await waiter
        finally:
            expiry.cancel()

    def _time_out(self, waiter: asyncio.Future[Any], timeout: float) -> None:
        if waiter.done():
            return
        waiter.set_exception(RedisTimeoutError(f"Redis did not answer within {timeout:g} s"))
        # The replies still due would answer the wrong commands: start afresh.
        self.abort(RedisConnectionError("the connection to Redis was dropped after a command timed out"))


def _response_error(error: ResponseError) -> ResponseError:
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return error


class RespClient:
    """Commands on one Redis connection, opened on first use and again after
    it fails. Bound to the event loop that first uses it."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        timeout: float = 5.0,
        decode: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.username = username
        self.password = password
        self.tls = tls
        self.timeout = timeout
        self.decode = decode
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 5.0, decode: bool = True) -> RespClient:
        """``redis://[[user]:password@]host[:port][/db]``, or ``rediss://`` for TLS."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"a Redis URL starts with redis:// or rediss://, not {url!r}")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the database in a Redis URL is a number, not {path!r}")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(path) if path else 0,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "rediss",
            timeout=timeout,
            decode=decode,
        )

    async def execute(self, *args: Arg, timeout: float | None = None) -> Any:
        """Send one command and return its reply; an error reply raises
        ``ResponseError``. ``timeout`` (default: the client's) bounds the wait."""
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        return await connection.request(pack_command(args), self.timeout if timeout is None else timeout)

    async def run_script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg] = ()) -> Any:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            connection.abort(RedisConnectionError("the client was closed"))

    async def _connect(self) -> _Connection:
        # Callers that find no connection share one attempt and its outcome:
        # with Redis unreachable, a hundred waiting sends fail together after
        # one timeout, not one after the other.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = _Connection(decode=self.decode)
        try:
            async with asyncio.timeout(self.timeout):
                await loop.create_connection(
                    lambda: connection, self.host, self.port, ssl=ssl.create_default_context() if self.tls else None
                )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {self.host}:{self.port}: {exc!r}") from exc
        try:
            if self.password is not None:
                credentials = [self.username, self.password] if self.username else [self.password]
                await connection.request(pack_command(["AUTH", *credentials]), self.timeout)
            if self.db:
                await connection.request(pack_command(["SELECT", self.db]), self.timeout)
        except BaseException:
            connection.abort(RedisConnectionError("the Redis handshake failed"))
            raise
        self._connection = connection
        return connection
