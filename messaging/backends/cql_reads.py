"""Single-page Cassandra reads on the event loop: a small client of the
native protocol (v4) for the reads of a history page (its bucket list and
its buckets), which a client waits for every time it opens or scrolls a chat.

Why not the driver: through scylla-driver such a read costs a chat server
two thread hand-offs (an I/O-pool thread sends it, because the driver's
``execute_async`` must not run on the loop; the driver's I/O thread
answers) and about 1.3 ms of CPU for a page of 50 rows; on one connection
owned by the loop it costs no hand-off and about half the CPU. A history
page's p99 halved (docs/performance.md, fifteenth pass). A send's binding
lookup stays with the driver: read here, it cost the pipeline's flood.

What it does and does not do. It only runs statements the driver has
already prepared, with values the driver has serialised
(``PreparedStatement.bind``), on the node the driver's load-balancing policy
puts first, and only reads results of the column types in
``DECODERS``. The driver keeps everything else: preparing, schema, writes,
topology and node health, retries. Whatever goes wrong here, short of a
timeout, raises ``LeanReadUnavailable`` and the caller sends the same read
through the driver, so a failure costs a detour, not an answer. A timeout
raises the driver's own ``OperationTimedOut``, as the driver would after
the same wait.

One connection per node and event loop carries every read at once, told
apart by stream id. A node that restarted may not know a statement any
more: it answers "unprepared", and the read prepares the statement's text
on that connection and runs once more.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any, cast

from cassandra import OperationTimedOut

from chatsite.aio import retrieve_outcome

logger = logging.getLogger(__name__)

# A decoder turns a cell's bytes (buffer, offset, length) into its value.
Decoder = Callable[[bytes, int, int], Any]

_HEADER = struct.Struct(">BBhBi")
_INT = struct.Struct(">i")
_SHORT = struct.Struct(">H")
_BIGINT = struct.Struct(">q")

_PROTOCOL_VERSION = 4
_RESPONSE_VERSION = 0x80 | _PROTOCOL_VERSION
_MAX_STREAMS = 32768

_OP_ERROR = 0x00
_OP_STARTUP = 0x01
_OP_READY = 0x02
_OP_RESULT = 0x08
_OP_PREPARE = 0x09
_OP_EXECUTE = 0x0A

_FLAG_COMPRESSED = 0x01
_FLAG_TRACING = 0x02
_FLAG_CUSTOM_PAYLOAD = 0x04
_FLAG_WARNING = 0x08

_RESULT_ROWS = 0x0002
_RESULT_PREPARED = 0x0004
_ROWS_GLOBAL_TABLE_SPEC = 0x0001
_ROWS_HAS_MORE_PAGES = 0x0002
_ROWS_NO_METADATA = 0x0004

_EXECUTE_VALUES = 0x01
_EXECUTE_SKIP_METADATA = 0x02

_UNPREPARED_CODE = _INT.pack(0x2500)

# After a node refused a connection, reads to it go through the driver for
# this long before the next attempt, so an outage costs one connect attempt
# a second per loop, not one per read.
_RECONNECT_PAUSE_SECONDS = 1.0


class LeanReadUnavailable(Exception):
    """This read cannot be done here; send it through the driver."""


class ServerError(LeanReadUnavailable):
    """Cassandra answered with an error frame."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"Cassandra error 0x{code:04x}: {message}")
        self.code = code


def _decode_bigint(data: bytes, offset: int, size: int) -> int:
    if size != 8:
        raise LeanReadUnavailable(f"a bigint of {size} bytes")
    return cast(int, _BIGINT.unpack_from(data, offset)[0])


def _decode_int(data: bytes, offset: int, size: int) -> int:
    if size != 4:
        raise LeanReadUnavailable(f"an int of {size} bytes")
    return cast(int, _INT.unpack_from(data, offset)[0])


def _decode_text(data: bytes, offset: int, size: int) -> str:
    return data[offset : offset + size].decode()


_new_object = object.__new__
_set_attribute = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


def _decode_uuid(data: bytes, offset: int, size: int) -> uuid.UUID:
    # A page decodes fifty of these. ``uuid.UUID(bytes=...)`` checks its
    # arguments in Python and cost a quarter of a page's decoding; sixteen
    # bytes are a valid UUID whatever they hold, so the value is set directly,
    # as the constructor would set it (its ``int`` and ``is_safe`` slots).
    if size != 16:
        raise LeanReadUnavailable(f"a uuid of {size} bytes")
    value = _new_object(uuid.UUID)
    _set_attribute(value, "int", int.from_bytes(data[offset : offset + 16]))
    _set_attribute(value, "is_safe", _UNKNOWN_SAFETY)
    return value


# By the driver's CQL type names (``cassandra.cqltypes``), the types the store reads.
DECODERS: dict[str, Decoder] = {
    "bigint": _decode_bigint,
    "int": _decode_int,
    "text": _decode_text,
    "varchar": _decode_text,
    "uuid": _decode_uuid,
    "timeuuid": _decode_uuid,
}


def decoders_for(statement: Any) -> tuple[Decoder, ...] | None:
    """The decoders of a prepared statement's result columns, or None when a
    column has a type this client does not read (the driver then reads it)."""
    columns = getattr(statement, "result_metadata", None)
    if not columns:
        return None
    decoders = []
    for column in columns:
        decoder = DECODERS.get(getattr(column[3], "typename", ""))
        if decoder is None:
            return None
        decoders.append(decoder)
    return tuple(decoders)


def _string(text: str) -> bytes:
    data = text.encode()
    return _SHORT.pack(len(data)) + data


def _skip_string(body: bytes, offset: int) -> int:
    size: int = _SHORT.unpack_from(body, offset)[0]
    return offset + 2 + size


def _skip_type_option(body: bytes, offset: int) -> int:
    (type_id,) = _SHORT.unpack_from(body, offset)
    if type_id == 0x0000 or type_id >= 0x0020:
        # Custom and collection types: the client decodes none of them.
        raise LeanReadUnavailable(f"a result column of type 0x{type_id:04x}")
    return offset + 2


def _body_after_extras(flags: int, body: bytes) -> int:
    """Where the frame's own body starts, past what the header's flags add."""
    offset = 0
    if flags & _FLAG_COMPRESSED:
        raise LeanReadUnavailable("a compressed frame, which was never asked for")
    if flags & _FLAG_TRACING:
        offset += 16
    if flags & _FLAG_WARNING:
        # Warnings (a large partition, many tombstones): the node logs them too.
        (count,) = _SHORT.unpack_from(body, offset)
        offset += 2
        for _ in range(count):
            offset = _skip_string(body, offset)
    if flags & _FLAG_CUSTOM_PAYLOAD:
        (count,) = _SHORT.unpack_from(body, offset)
        offset += 2
        for _ in range(count):
            offset = _skip_string(body, offset)
            (size,) = _INT.unpack_from(body, offset)
            offset += 4 + max(size, 0)
    return offset


def _error_of(body: bytes, offset: int) -> ServerError:
    (code,) = _INT.unpack_from(body, offset)
    (size,) = _SHORT.unpack_from(body, offset + 4)
    message = body[offset + 6 : offset + 6 + size].decode(errors="replace")
    return ServerError(code, message)


def parse_rows(body: bytes, offset: int, decoders: Sequence[Decoder]) -> list[tuple[Any, ...]]:
    """The rows of a Rows result that starts at ``offset`` (past its kind)."""
    flags, column_count = struct.unpack_from(">ii", body, offset)
    offset += 8
    if column_count != len(decoders):
        raise LeanReadUnavailable(f"{column_count} columns in the result, {len(decoders)} expected")
    if flags & _ROWS_HAS_MORE_PAGES:
        raise LeanReadUnavailable("a result with more pages")
    if not flags & _ROWS_NO_METADATA:
        if flags & _ROWS_GLOBAL_TABLE_SPEC:
            offset = _skip_string(body, _skip_string(body, offset))
        for _ in range(column_count):
            if not flags & _ROWS_GLOBAL_TABLE_SPEC:
                offset = _skip_string(body, _skip_string(body, offset))
            offset = _skip_type_option(body, _skip_string(body, offset))
    (row_count,) = _INT.unpack_from(body, offset)
    offset += 4
    unpack_size = _INT.unpack_from
    rows: list[tuple[Any, ...]] = []
    for _ in range(row_count):
        row: list[Any] = []
        for decode in decoders:
            (size,) = unpack_size(body, offset)
            offset += 4
            if size < 0:
                row.append(None)
            else:
                row.append(decode(body, offset, size))
                offset += size
        rows.append(tuple(row))
    if offset != len(body):
        raise LeanReadUnavailable("a Rows result longer than its rows")
    return rows


class _Connection(asyncio.Protocol):
    """One connection to a node; replies find their requests by stream id."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        # Includes streams whose caller gave up: their ids stay taken until
        # the reply comes, so a late reply never answers a newer request.
        self._waiting: dict[int, asyncio.Future[tuple[int, int, bytes]]] = {}
        self._next_stream = 0
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _HEADER.size:
            version, flags, stream, opcode, length = _HEADER.unpack_from(buffer, 0)
            if version != _RESPONSE_VERSION or length < 0:
                self.abort(LeanReadUnavailable(f"not a protocol v4 response (version byte 0x{version:02x})"))
                return
            end = _HEADER.size + length
            if len(buffer) < end:
                return
            body = bytes(buffer[_HEADER.size : end])
            del buffer[:end]
            waiter = self._waiting.pop(stream, None)
            # Stream -1 carries server events, which were never registered for.
            if waiter is not None and not waiter.done():
                waiter.set_result((flags, opcode, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_waiting(LeanReadUnavailable(f"the connection to Cassandra was lost: {exc or 'closed by the node'}"))

    def _fail_waiting(self, error: Exception) -> None:
        self.closed = True
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_exception(error)

    def abort(self, error: Exception) -> None:
        self._fail_waiting(error)
        if self._transport is not None:
            self._transport.abort()

    def _allocate_stream(self) -> int:
        if len(self._waiting) >= _MAX_STREAMS:
            raise LeanReadUnavailable("every stream of the connection is in use")
        stream = self._next_stream
        while stream in self._waiting:
            stream = (stream + 1) % _MAX_STREAMS
        self._next_stream = (stream + 1) % _MAX_STREAMS
        return stream

    async def request(self, opcode: int, body: bytes, timeout: float) -> tuple[int, bytes]:
        """Send a frame and await the reply's opcode and body (past its extras)."""
        if self.closed or self._transport is None:
            raise LeanReadUnavailable("the connection to Cassandra is closed")
        loop = asyncio.get_running_loop()
        stream = self._allocate_stream()
        waiter: asyncio.Future[tuple[int, int, bytes]] = loop.create_future()
        self._waiting[stream] = waiter
        self._transport.write(_HEADER.pack(_PROTOCOL_VERSION, 0, stream, opcode, len(body)) + body)
        expiry = loop.call_later(timeout, _time_out, waiter, timeout)
        try:
            flags, reply_opcode, reply = await waiter
        finally:
            expiry.cancel()
        try:
            offset = _body_after_extras(flags, reply)
        except struct.error as exc:
            raise LeanReadUnavailable(f"a reply that cannot be read: {exc}") from exc
        return reply_opcode, reply[offset:]


def _time_out(waiter: asyncio.Future[Any], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(OperationTimedOut(f"Cassandra did not answer within {timeout:g} s"))


class LeanCqlClient:
    """Reads over one connection per node, opened on first use and again
    after it fails. Bound to the event loop that first uses it."""

    def __init__(self, *, connect_timeout: float, request_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._connections: dict[tuple[str, int], _Connection] = {}
        self._connecting: dict[tuple[str, int], asyncio.Future[_Connection]] = {}
        self._refused_until: dict[tuple[str, int], float] = {}

    async def rows(
        self,
        endpoint: tuple[str, int],
        *,
        query_id: bytes,
        query_text: str,
        values: Sequence[bytes | None],
        consistency: int,
        decoders: Sequence[Decoder],
    ) -> list[tuple[Any, ...]]:
        """The rows of a prepared statement run on ``endpoint``."""
        connection = await self._connection_to(endpoint)
        encoded = bytearray(_SHORT.pack(len(values)))
        for value in values:
            if value is None:
                encoded += _INT.pack(-1)
            elif isinstance(value, bytes):
                encoded += _INT.pack(len(value)) + value
            else:  # the driver's UNSET_VALUE: the store never leaves a value unset
                raise LeanReadUnavailable(f"a bound value of type {type(value).__name__}")
        parameters = struct.pack(">HB", consistency, _EXECUTE_VALUES | _EXECUTE_SKIP_METADATA) + encoded
        opcode, body = await connection.request(
            _OP_EXECUTE, _SHORT.pack(len(query_id)) + query_id + parameters, self.request_timeout
        )
        if opcode == _OP_ERROR and body[:4] == _UNPREPARED_CODE:
            # The node lost the statement (a restart); the id depends only on
            # the text, so preparing it again restores the same id.
            query_id = await self._prepare(connection, query_text)
            opcode, body = await connection.request(
                _OP_EXECUTE, _SHORT.pack(len(query_id)) + query_id + parameters, self.request_timeout
            )
        try:
            if opcode == _OP_ERROR:
                raise _error_of(body, 0)
            if opcode != _OP_RESULT or _INT.unpack_from(body, 0)[0] != _RESULT_ROWS:
                raise LeanReadUnavailable(f"a reply of opcode 0x{opcode:02x} to a read")
            return parse_rows(body, 4, decoders)
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise LeanReadUnavailable(f"a Rows result that cannot be read: {exc!r}") from exc

    async def close(self) -> None:
        connections, self._connections = self._connections, {}
        for connection in connections.values():
            connection.abort(LeanReadUnavailable("the client was closed"))

    async def _prepare(self, connection: _Connection, query_text: str) -> bytes:
        text = query_text.encode()
        opcode, body = await connection.request(_OP_PREPARE, _INT.pack(len(text)) + text, self.request_timeout)
        try:
            if opcode == _OP_ERROR:
                raise _error_of(body, 0)
            (kind,) = _INT.unpack_from(body, 0)
            if opcode != _OP_RESULT or kind != _RESULT_PREPARED:
                raise LeanReadUnavailable(f"a reply of opcode 0x{opcode:02x} to a prepare")
            (size,) = _SHORT.unpack_from(body, 4)
            return body[6 : 6 + size]
        except struct.error as exc:
            raise LeanReadUnavailable(f"a Prepared result that cannot be read: {exc}") from exc

    async def _connection_to(self, endpoint: tuple[str, int]) -> _Connection:
        connection = self._connections.get(endpoint)
        if connection is not None and not connection.closed:
            return connection
        if time.monotonic() < self._refused_until.get(endpoint, 0.0):
            raise LeanReadUnavailable(f"Cassandra at {endpoint[0]}:{endpoint[1]} refused a connection moments ago")
        # Reads that find no connection share one attempt and its outcome.
        connecting = self._connecting.get(endpoint)
        if connecting is None or connecting.done():
            connecting = asyncio.ensure_future(self._open(endpoint))
            # Every read waiting for it may have been cancelled.
            connecting.add_done_callback(retrieve_outcome)
            self._connecting[endpoint] = connecting
        return await asyncio.shield(connecting)

    async def _open(self, endpoint: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = _Connection()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: connection, endpoint[0], endpoint[1])
                opcode, _options = await connection.request(
                    _OP_STARTUP, _SHORT.pack(1) + _string("CQL_VERSION") + _string("3.0.0"), self.connect_timeout
                )
            if opcode != _OP_READY:
                # AUTHENTICATE among others: this client sends no credentials.
                raise LeanReadUnavailable(f"Cassandra answered the startup with opcode 0x{opcode:02x}")
        except (OSError, TimeoutError, OperationTimedOut, LeanReadUnavailable) as exc:
            connection.abort(LeanReadUnavailable("the startup failed"))
            self._refused_until[endpoint] = time.monotonic() + _RECONNECT_PAUSE_SECONDS
            logger.warning(
                "lean reads: cannot connect to Cassandra at %s:%s (%r); reads go through the driver", *endpoint, exc
            )
            raise LeanReadUnavailable(f"cannot connect to Cassandra at {endpoint[0]}:{endpoint[1]}: {exc!r}") from exc
        self._connections[endpoint] = connection
        return connection


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LeanCqlClient] = weakref.WeakKeyDictionary()


def lean_client(*, connect_timeout: float, request_timeout: float) -> LeanCqlClient:
    """The running loop's client (asyncio connections belong to the loop that opened them)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = LeanCqlClient(connect_timeout=connect_timeout, request_timeout=request_timeout)
        _clients[loop] = client
    return client
