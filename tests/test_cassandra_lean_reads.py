"""The lean reads (messaging.backends.cql_reads): a history page's reads, done
by the event loop over the native protocol, against a real Cassandra; and the
client's answers to a peer that misbehaves, a scripted server on a real socket.

Reach Cassandra as tests/test_cassandra_store.py does (``CHAT_CASSANDRA_HOSTS``,
``CHAT_CASSANDRA_PORT``, ``CHAT_CASSANDRA_TEST_KEYSPACE``).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from cassandra import OperationTimedOut
from django.test import override_settings

from chatsite.topology import free_port
from messaging.backends.base import Claim
from messaging.backends.cassandra_store import CassandraMessageStore
from messaging.backends.cql_reads import DECODERS, LeanCqlClient, LeanReadUnavailable, decoders_for
from tests.test_cassandra_store import (
    BASE_UNIX,
    HOSTS,
    KEYSPACE,
    PORT,
    at,
    cassandra,  # noqa: F401 - the module fixture that brings Cassandra up
    make_store,
    message,
    new_chat_id,
    requests_sent,
)


def lean_client(request_timeout: float = 5.0) -> LeanCqlClient:
    return LeanCqlClient(connect_timeout=2.0, request_timeout=request_timeout)


async def test_pages_after_the_first_take_the_loops_own_connection() -> None:
    store = make_store(bucket_seconds=60)
    chat_id = new_chat_id()
    sent = [message(chat_id, at(BASE_UNIX + second)) for second in range(40)]
    await store.asave_messages(sent)
    # The first read of a statement goes through the driver, which prepares it.
    assert await store.ahistory(chat_id=chat_id, limit=10, before=sent[-1].message_id) == sent[-2:-12:-1]

    with requests_sent(store) as requests:
        for cursor in range(10, 40, 3):
            assert (
                await store.ahistory(chat_id=chat_id, limit=10, before=sent[cursor].message_id)
                == (sent[cursor - 10 : cursor][::-1])
            )
        assert requests == []
        # A send's binding lookup stays with the driver (see find_claim).
        assert await store.find_claim(sender_id=1, client_msg_id=sent[5].client_msg_id) == Claim(
            message_id=sent[5].message_id, chat_id=chat_id
        )
        assert len(requests) == 1


async def test_every_page_walks_its_buckets_on_the_loop() -> None:
    # The newest page (the current bucket guessed and read while the bucket
    # list comes), pages that cross into older or newer buckets, and pages
    # forward: once each statement is prepared, none goes through the driver.
    store = make_store(bucket_seconds=60)
    now = time.time()
    active, quiet = new_chat_id(), new_chat_id()
    old = [message(active, at(BASE_UNIX + minute * 60 + second)) for minute in (0, 2, 5) for second in range(0, 60, 6)]
    recent = [message(active, at(now - 0.5, ticks=tick)) for tick in range(0, 30_000, 1_000)]
    sent = old + recent
    await store.asave_messages(sent)
    await store.asave_messages(old_in_quiet := [message(quiet, at(BASE_UNIX + second)) for second in range(5)])

    def pages() -> list[tuple[int, int, uuid.UUID | None, uuid.UUID | None]]:
        return [
            (active, 10, None, None),  # the guess holds the newest page
            (active, 50, None, None),  # and the walk goes on past it
            (quiet, 10, None, None),  # the guess is wrong: an old chat
            (active, 15, sent[12].message_id, None),  # crosses into an older bucket
            (active, 15, None, sent[3].message_id),  # forward, across buckets
            (active, 8, sent[25].message_id, sent[2].message_id),
        ]

    for chat_id, limit, before, after in pages():  # prepares every statement
        await store.ahistory(chat_id=chat_id, limit=limit, before=before, after=after)
    with requests_sent(store) as requests:
        awaited = [
            await store.ahistory(chat_id=chat_id, limit=limit, before=before, after=after)
            for chat_id, limit, before, after in pages()
        ]
        assert requests == []
    assert awaited == [
        store.history(chat_id=chat_id, limit=limit, before=before, after=after)
        for chat_id, limit, before, after in pages()
    ]
    assert awaited[0] == recent[::-1][:10]
    assert awaited[1] == sent[::-1][:50]
    assert awaited[2] == old_in_quiet[::-1]


async def test_with_lean_reads_off_every_read_goes_through_the_driver() -> None:
    with override_settings(
        CHAT_CASSANDRA_HOSTS=HOSTS,
        CHAT_CASSANDRA_PORT=PORT,
        CHAT_CASSANDRA_KEYSPACE=KEYSPACE,
        CHAT_CASSANDRA_BUCKET_SECONDS=60,
        CHAT_CASSANDRA_LEAN_READS=False,
    ):
        store = CassandraMessageStore()
    chat_id = new_chat_id()
    sent = [message(chat_id, at(BASE_UNIX + second)) for second in range(12)]
    await store.asave_messages(sent)
    assert await store.ahistory(chat_id=chat_id, limit=5, before=sent[-1].message_id) == sent[-2:-7:-1]
    with requests_sent(store) as requests:
        assert await store.ahistory(chat_id=chat_id, limit=5, before=sent[-1].message_id) == sent[-2:-7:-1]
        assert await store.ahistory(chat_id=chat_id, limit=5, before=sent[-3].message_id) == sent[-4:-9:-1]
        assert len(requests) == 2


async def test_an_error_from_the_node_sends_the_read_through_the_driver(caplog: pytest.LogCaptureFixture) -> None:
    # One node cannot answer at consistency THREE. The first page prepares its
    # statement through the driver and fails there; the second is a lean read,
    # which gets the node's error frame and repeats the read through the
    # driver, so the caller sees the driver's error, as before.
    with override_settings(
        CHAT_CASSANDRA_HOSTS=HOSTS,
        CHAT_CASSANDRA_PORT=PORT,
        CHAT_CASSANDRA_KEYSPACE=KEYSPACE,
        CHAT_CASSANDRA_CONSISTENCY="THREE",
    ):
        demanding = CassandraMessageStore()
    cursor = at(BASE_UNIX)
    with pytest.raises(Exception, match="Cannot achieve consistency level THREE"):
        await demanding.ahistory(chat_id=new_chat_id(), limit=5, before=cursor)
    caplog.set_level(logging.DEBUG, logger="messaging.backends.cassandra_store")
    with requests_sent(demanding) as requests, pytest.raises(Exception, match="Cannot achieve consistency level THREE"):
        await demanding.ahistory(chat_id=new_chat_id(), limit=5, before=cursor)
    assert len(requests) == 1
    # The node's error frame (Unavailable, 0x1000) came to the lean read first.
    assert "lean read failed, reading through the driver: Cassandra error 0x1000" in caplog.text


async def test_a_node_that_lost_the_statement_gets_it_prepared_again() -> None:
    # A restarted node answers an unknown statement id with "unprepared"; the
    # client prepares the text on that connection and runs the read again.
    store = make_store()
    chat_id = new_chat_id()
    stored = message(chat_id, at(BASE_UNIX))
    store.save_messages([stored])
    statement = store.session.prepare(
        f"SELECT message_id, chat_id FROM {KEYSPACE}.client_message_claims WHERE sender_id = ? AND client_msg_id = ?"
    )
    decoders = decoders_for(statement)
    assert decoders is not None
    client = lean_client()
    try:
        rows = await client.rows(
            (HOSTS[0], PORT),
            query_id=b"\x00" * 16,  # no node knows this id
            query_text=statement.query_string,
            values=statement.bind((1, stored.client_msg_id)).values,
            consistency=1,
            decoders=decoders,
        )
    finally:
        await client.close()
    assert rows == [(stored.message_id, chat_id)]


async def test_the_client_reads_ints_nulls_and_any_text() -> None:
    store = make_store(bucket_seconds=60)
    chat_id = new_chat_id()
    kept = message(chat_id, at(BASE_UNIX + 61), body="søren ✓ 数据 \U0001f600")
    store.save_messages([kept])
    store.session.execute(
        f"INSERT INTO {KEYSPACE}.messages_by_chat (chat_id, bucket, message_id, sender_id, sender, body)"
        " VALUES (%s, %s, %s, 7, 'x', '')",
        (chat_id, store.bucket(kept.message_id), at(BASE_UNIX + 62)),
    )
    by_page = store.session.prepare(
        f"SELECT message_id, chat_id, sender_id, sender, body, client_msg_id FROM {KEYSPACE}.messages_by_chat"
        " WHERE chat_id = ? AND bucket = ?"
    )
    buckets = store.session.prepare(f"SELECT bucket, chat_id FROM {KEYSPACE}.chat_buckets WHERE chat_id = ?")
    client = lean_client()
    try:
        page = await client.rows(
            (HOSTS[0], PORT),
            query_id=by_page.query_id,
            query_text=by_page.query_string,
            values=by_page.bind((chat_id, store.bucket(kept.message_id))).values,
            consistency=1,
            decoders=decoders_for(by_page) or (),
        )
        listed = await client.rows(
            (HOSTS[0], PORT),
            query_id=buckets.query_id,
            query_text=buckets.query_string,
            values=buckets.bind((chat_id,)).values,
            consistency=1,
            decoders=decoders_for(buckets) or (),
        )
    finally:
        await client.close()
    assert page == [
        (at(BASE_UNIX + 62), chat_id, 7, "x", "", None),
        (kept.message_id, chat_id, kept.sender_id, kept.sender, kept.body, kept.client_msg_id),
    ]
    assert listed == [(store.bucket(kept.message_id), chat_id)]
    # An id read here is a UUID like the driver's: same value, hash, text and time.
    read_id = page[1][0]
    assert isinstance(read_id, uuid.UUID)
    assert (str(read_id), read_id.version, read_id.time) == (str(kept.message_id), 1, kept.message_id.time)
    assert {kept.message_id: "kept"}[read_id] == "kept"
    # A column type the client does not read (timestamp) leaves the statement to the driver.
    timestamps = store.session.prepare(
        f"SELECT message_id, toTimestamp(message_id) FROM {KEYSPACE}.messages_by_chat WHERE chat_id = ? AND bucket = ?"
    )
    assert decoders_for(timestamps) is None


# --- a scripted peer --------------------------------------------------------------

Answer = Callable[[int, int, bytes], Awaitable[bytes | None]]


def frame(stream: int, opcode: int, body: bytes, *, version: int = 0x84, flags: int = 0) -> bytes:
    return struct.pack(">BBhBi", version, flags, stream, opcode, len(body)) + body


def rows_result(rows: list[tuple[bytes, ...]], columns: int) -> bytes:
    cells = b"".join(struct.pack(">i", len(cell)) + cell for row in rows for cell in row)
    return struct.pack(">iiii", 0x0002, 0x0004, columns, len(rows)) + cells


@asynccontextmanager
async def scripted_peer(answer: Answer) -> AsyncIterator[tuple[str, int]]:
    """A server that says READY to STARTUP and lets ``answer`` reply to the
    rest: the bytes to send back, or None to close the connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                _version, _flags, stream, opcode, length = struct.unpack(">BBhBi", await reader.readexactly(9))
                body = await reader.readexactly(length)
                reply = frame(stream, 0x02, b"") if opcode == 0x01 else await answer(stream, opcode, body)
                if reply is None:
                    break
                writer.write(reply)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield ("127.0.0.1", port)
    finally:
        server.close()


async def read_one(
    client: LeanCqlClient, endpoint: tuple[str, int], key: int = 5, *, first_column: str = "bigint"
) -> list[tuple[object, ...]]:
    """A read of a made-up statement whose rows are a bigint (or
    ``first_column``) and a text."""
    return await client.rows(
        endpoint,
        query_id=b"q" * 16,
        query_text="SELECT a, b FROM t WHERE k = ?",
        values=[struct.pack(">q", key)],
        consistency=6,
        decoders=(DECODERS[first_column], DECODERS["text"]),
    )


async def test_replies_find_their_reads_in_any_order_over_one_connection() -> None:
    async def answer(stream: int, opcode: int, body: bytes) -> bytes | None:
        assert opcode == 0x0A
        (key,) = struct.unpack(">q", body[-8:])
        await asyncio.sleep(0.05 if key % 2 else 0)  # odd keys answer late
        return frame(stream, 0x08, rows_result([(struct.pack(">q", key), f"row {key}".encode())], 2))

    async with scripted_peer(answer) as endpoint:
        client = lean_client()
        try:
            pages = await asyncio.gather(*(read_one(client, endpoint, key) for key in range(20)))
        finally:
            await client.close()
    assert pages == [[(key, f"row {key}")] for key in range(20)]


async def test_a_node_that_does_not_answer_times_the_read_out() -> None:
    async def answer(stream: int, opcode: int, body: bytes) -> bytes | None:
        await asyncio.sleep(30)
        return None

    async with scripted_peer(answer) as endpoint:
        client = lean_client(request_timeout=0.3)
        began = time.monotonic()
        try:
            with pytest.raises(OperationTimedOut, match=r"did not answer within 0\.3 s"):
                await read_one(client, endpoint)
        finally:
            await client.close()
    assert time.monotonic() - began < 5


@pytest.mark.parametrize(
    "misbehaviour",
    [
        "closes the connection",
        "answers in protocol v5",
        "answers rows of three columns",
        "answers a void result",
        "answers a bigint of four bytes",
        "answers a uuid of fifteen bytes",
    ],
)
async def test_a_peer_that_misbehaves_leaves_the_read_to_the_driver(misbehaviour: str) -> None:
    async def answer(stream: int, opcode: int, body: bytes) -> bytes | None:
        if misbehaviour == "closes the connection":
            return None
        if misbehaviour == "answers in protocol v5":
            return frame(stream, 0x08, rows_result([], 2), version=0x85)
        if misbehaviour == "answers rows of three columns":
            return frame(stream, 0x08, rows_result([(b"", b"", b"")], 3))
        if misbehaviour == "answers a bigint of four bytes":
            return frame(stream, 0x08, rows_result([(b"\x00" * 4, b"x")], 2))
        if misbehaviour == "answers a uuid of fifteen bytes":
            return frame(stream, 0x08, rows_result([(uuid.uuid1().bytes[:15], b"x")], 2))
        return frame(stream, 0x08, struct.pack(">i", 0x0001))

    first_column = "timeuuid" if "uuid" in misbehaviour else "bigint"
    async with scripted_peer(answer) as endpoint:
        client = lean_client()
        try:
            with pytest.raises(LeanReadUnavailable):
                await read_one(client, endpoint, first_column=first_column)
        finally:
            await client.close()


async def test_a_node_that_refuses_connections_is_left_alone_for_a_moment() -> None:
    client = lean_client()
    endpoint = ("127.0.0.1", free_port())  # nothing listens there
    with pytest.raises(LeanReadUnavailable, match="cannot connect"):
        await read_one(client, endpoint)
    # Within the pause the read fails at once, without another attempt.
    with pytest.raises(LeanReadUnavailable, match="refused a connection moments ago"):
        await read_one(client, endpoint)
    await client.close()


async def test_a_node_that_asks_for_credentials_is_left_to_the_driver() -> None:
    port = free_port()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _v, _f, stream, _op, length = struct.unpack(">BBhBi", await reader.readexactly(9))
        await reader.readexactly(length)
        authenticator = b"org.apache.cassandra.auth.PasswordAuthenticator"
        writer.write(frame(stream, 0x03, struct.pack(">H", len(authenticator)) + authenticator))
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    client = lean_client()
    try:
        with pytest.raises(LeanReadUnavailable, match="opcode 0x03"):
            await read_one(client, ("127.0.0.1", port))
    finally:
        await client.close()
        server.close()
