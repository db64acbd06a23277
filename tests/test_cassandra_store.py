"""CassandraMessageStore against a real Cassandra.

Reach it with ``CHAT_CASSANDRA_HOSTS`` (comma separated, default 127.0.0.1) and
``CHAT_CASSANDRA_PORT`` (default 9042); tables go to the keyspace
``CHAT_CASSANDRA_TEST_KEYSPACE`` (default ``chat_test``). Every test works in
chats with fresh random ids, so nothing is truncated between runs.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings

from chatsite.topology import free_port
from messaging.backends import reset_backends, warm_up_backends
from messaging.backends.base import Claim
from messaging.backends.cassandra_store import CassandraMessageStore, close_sessions
from messaging.backends.orm_store import OrmMessageStore
from messaging.ids import message_sort_key, new_message_id, timeuuid_for_time, timeuuid_from_parts
from messaging.models import Chat
from messaging.types import Message
from tests.helpers import ensure_services

HOSTS = [host.strip() for host in os.environ.get("CHAT_CASSANDRA_HOSTS", "127.0.0.1").split(",") if host.strip()]
PORT = int(os.environ.get("CHAT_CASSANDRA_PORT", "9042"))
KEYSPACE = os.environ.get("CHAT_CASSANDRA_TEST_KEYSPACE", "chat_test")

_UUID_EPOCH_OFFSET = 0x01B21DD213814000
# 2026-01-01T00:00:00Z: a whole minute, so minute offsets are bucket offsets.
BASE_UNIX = 1767225600


def make_store(bucket_seconds: int | None = None) -> CassandraMessageStore:
    overrides: dict[str, Any] = {
        "CHAT_CASSANDRA_HOSTS": HOSTS,
        "CHAT_CASSANDRA_PORT": PORT,
        "CHAT_CASSANDRA_KEYSPACE": KEYSPACE,
    }
    if bucket_seconds is not None:
        overrides["CHAT_CASSANDRA_BUCKET_SECONDS"] = bucket_seconds
    with override_settings(**overrides):
        return CassandraMessageStore()


@pytest.fixture(scope="module", autouse=True)
def cassandra() -> Iterator[None]:
    if "CHAT_CASSANDRA_PORT" not in os.environ:
        ensure_services()  # the project's own local servers
    try:
        with socket.create_connection((HOSTS[0], PORT), timeout=3):
            pass
    except OSError as exc:
        pytest.fail(
            f"Cassandra is not reachable at {HOSTS[0]}:{PORT} ({exc}); start it with "
            "`scripts/services/cassandra.sh start` and point CHAT_CASSANDRA_HOSTS / CHAT_CASSANDRA_PORT at it",
            pytrace=False,
        )
    make_store().sync_schema()
    yield
    close_sessions()


@pytest.fixture
def store() -> CassandraMessageStore:
    return make_store()


def new_chat_id() -> int:
    return secrets.randbits(62) + 1


def at(unix_seconds: float, *, ticks: int = 0, clock_seq: int = 0x1234, node: int = 0x0123456789AB) -> uuid.UUID:
    """A message id at a chosen moment plus ``ticks`` of 100 ns (exact, unlike
    float seconds, which cannot say "one tick before" at today's magnitudes)."""
    timestamp = round(unix_seconds * 10_000_000) + ticks + _UUID_EPOCH_OFFSET
    return timeuuid_from_parts(timestamp, clock_seq, node)


def message(chat_id: int, message_id: uuid.UUID, sender_id: int = 1, body: str | None = None) -> Message:
    return Message(
        message_id=message_id,
        chat_id=chat_id,
        sender_id=sender_id,
        sender=f"user{sender_id}",
        body=body if body is not None else f"body {message_id}",
        client_msg_id=f"client-{message_id}",
    )


def ids_of(messages: list[Message]) -> list[uuid.UUID]:
    return [m.message_id for m in messages]


def partition_ids(store: CassandraMessageStore, chat_id: int, bucket: int) -> list[uuid.UUID]:
    rows = store.session.execute(
        f"SELECT message_id FROM {KEYSPACE}.messages_by_chat WHERE chat_id = %s AND bucket = %s", (chat_id, bucket)
    )
    return [row[0] for row in rows]


@contextmanager
def requests_sent(store: CassandraMessageStore) -> Iterator[list[Any]]:
    """The queries of every request the store's session starts inside the block."""
    requests: list[Any] = []

    def record(future: Any) -> None:
        requests.append(future.query)

    store.session.add_request_init_listener(record)
    try:
        yield requests
    finally:
        store.session.remove_request_init_listener(record)


def recorded_buckets(store: CassandraMessageStore, chat_id: int) -> list[int]:
    rows = store.session.execute(f"SELECT bucket FROM {KEYSPACE}.chat_buckets WHERE chat_id = %s", (chat_id,))
    return [row[0] for row in rows]


# --- saving and claiming --------------------------------------------------------


def test_save_is_idempotent(store: CassandraMessageStore) -> None:
    chat_id = new_chat_id()
    messages = [message(chat_id, new_message_id(), sender_id=i % 2) for i in range(5)]
    store.save_messages(messages)
    store.save_messages(messages)
    store.save_messages([messages[2], messages[2]])  # a duplicate inside one batch too

    assert store.history(chat_id=chat_id, limit=50) == messages[::-1]
    bucket = store.bucket(messages[0].message_id)
    assert sorted(partition_ids(store, chat_id, bucket), key=message_sort_key) == ids_of(messages)
    assert store.get_message(chat_id=chat_id, message_id=messages[3].message_id) == messages[3]
    assert store.get_message(chat_id=chat_id + 1, message_id=messages[3].message_id) is None
    assert store.get_message(chat_id=chat_id, message_id=new_message_id()) is None
    store.save_messages([])


async def test_saving_a_message_binds_its_client_msg_id(store: CassandraMessageStore) -> None:
    sender_id, chat_id = new_chat_id(), new_chat_id()
    sent = message(chat_id, new_message_id(), sender_id=sender_id)
    assert await store.find_claim(sender_id=sender_id, client_msg_id=sent.client_msg_id) is None

    store.save_messages([sent])

    assert await store.find_claim(sender_id=sender_id, client_msg_id=sent.client_msg_id) == Claim(
        message_id=sent.message_id, chat_id=chat_id
    )
    # The same client id of another sender is unbound.
    assert await store.find_claim(sender_id=sender_id + 1, client_msg_id=sent.client_msg_id) is None


async def test_a_large_mixed_batch_is_stored_whole_with_every_binding(store: CassandraMessageStore) -> None:
    # Cut into many unlogged batches: 300 messages over three chats, some with
    # bodies of 4,000 characters (more than a batch's byte budget on their own)
    # and multi-byte text, from 50 senders.
    chats = [new_chat_id() for _ in range(3)]
    sender_base = new_chat_id()
    messages = [
        message(
            chats[n % 3],
            new_message_id(),
            sender_id=sender_base + n % 50,
            body=("é" * 4000) if n % 37 == 0 else f"body {n} " + "ü" * (n % 200),
        )
        for n in range(300)
    ]
    store.save_messages(messages)

    for chat_id in chats:
        mine = [m for m in messages if m.chat_id == chat_id]
        assert store.history(chat_id=chat_id, limit=200) == mine[::-1]
    for sent in messages[::7]:
        assert await store.find_claim(sender_id=sent.sender_id, client_msg_id=sent.client_msg_id) == Claim(
            message_id=sent.message_id, chat_id=sent.chat_id
        )


async def test_a_small_dispatch_is_one_request_with_its_bindings(store: CassandraMessageStore) -> None:
    chat_id, sender_base = new_chat_id(), new_chat_id()
    alone = [message(chat_id, new_message_id(), sender_id=sender_base)]
    # One message partition and six binding partitions: under the ten a batch may span.
    several = [message(chat_id, new_message_id(), sender_id=sender_base + n) for n in range(6)]
    # Eleven partitions: past that limit, so cut into several requests.
    many = [message(chat_id, new_message_id(), sender_id=sender_base + n) for n in range(10)]
    store.save_messages([message(chat_id, new_message_id())])  # the chat's bucket is recorded
    with requests_sent(store) as requests:
        store.save_messages(alone)
        assert len(requests) == 1
        requests.clear()
        store.save_messages(several)
        assert len(requests) == 1
        requests.clear()
        store.save_messages(many)
        assert len(requests) > 1
    for sent in alone + several + many:
        assert store.get_message(chat_id=chat_id, message_id=sent.message_id) == sent
        assert await store.find_claim(sender_id=sent.sender_id, client_msg_id=sent.client_msg_id) == Claim(
            message_id=sent.message_id, chat_id=chat_id
        )


def test_row_lands_in_its_chat_and_bucket_partition() -> None:
    store = make_store(bucket_seconds=60)
    chat_id = new_chat_id()
    stored = message(chat_id, at(BASE_UNIX + 8 * 60, ticks=-1))  # the last tick of minute 7
    store.save_messages([stored])

    expected_bucket = (BASE_UNIX + 7 * 60) // 60
    assert store.bucket(stored.message_id) == expected_bucket
    rows = list(
        store.session.execute(
            f"SELECT chat_id, bucket, message_id, sender_id, sender, body, client_msg_id"
            f" FROM {KEYSPACE}.messages_by_chat WHERE chat_id = %s AND bucket = %s",
            (chat_id, expected_bucket),
        )
    )
    assert rows == [
        (
            chat_id,
            expected_bucket,
            stored.message_id,
            stored.sender_id,
            stored.sender,
            stored.body,
            stored.client_msg_id,
        )
    ]
    assert partition_ids(store, chat_id, expected_bucket + 1) == []
    assert recorded_buckets(store, chat_id) == [expected_bucket]


# --- history --------------------------------------------------------------------


def test_history_walks_buckets_with_gaps() -> None:
    store = make_store(bucket_seconds=60)
    chat_id = new_chat_id()
    # Minutes 0, 1, 5, 6, 40 and 41 (minute 1 twice): empty buckets in between.
    minutes = [0, 1, 1.5, 5, 6, 40, 41]
    messages = [message(chat_id, at(BASE_UNIX + m * 60 + 3)) for m in minutes]
    store.save_messages(messages[::-1])

    first_bucket = BASE_UNIX // 60
    assert sorted(recorded_buckets(store, chat_id)) == [first_bucket + m for m in (0, 1, 5, 6, 40, 41)]
    assert partition_ids(store, chat_id, first_bucket + 1) == [messages[2].message_id, messages[1].message_id]
    assert partition_ids(store, chat_id, first_bucket + 2) == []

    newest_first = messages[::-1]
    assert store.history(chat_id=chat_id, limit=100) == newest_first
    assert store.history(chat_id=chat_id, limit=3) == newest_first[:3]

    # Page backwards two at a time, as a client scrolling up does.
    pages: list[Message] = []
    before: uuid.UUID | None = None
    while True:
        page = store.history(chat_id=chat_id, limit=2, before=before)
        pages.extend(page)
        if len(page) < 2:
            break
        before = page[-1].message_id
    assert pages == newest_first

    # Catch up forwards two at a time from before the first message.
    caught_up: list[Message] = []
    after = at(BASE_UNIX - 3600)
    while True:
        page = store.history(chat_id=chat_id, limit=2, after=after)
        assert page == sorted(page, key=lambda m: message_sort_key(m.message_id), reverse=True)
        caught_up[:0] = page
        if len(page) < 2:
            break
        after = page[0].message_id
    assert caught_up == newest_first

    # Bounds inside empty buckets, and far outside the chat's life.
    assert store.history(chat_id=chat_id, limit=10, before=at(BASE_UNIX + 20 * 60)) == newest_first[2:]
    assert store.history(chat_id=chat_id, limit=10, after=at(BASE_UNIX + 20 * 60)) == newest_first[:2]
    assert store.history(chat_id=chat_id, limit=2, after=at(BASE_UNIX + 3 * 60)) == [messages[4], messages[3]]
    assert store.history(
        chat_id=chat_id, limit=10, after=at(BASE_UNIX + 60.5), before=at(BASE_UNIX + 40 * 60 + 30)
    ) == [messages[5], messages[4], messages[3], messages[2], messages[1]]
    assert store.history(chat_id=chat_id, limit=10, before=at(BASE_UNIX - 86400)) == []
    assert store.history(chat_id=chat_id, limit=10, after=at(BASE_UNIX + 86400)) == []
    far_future = timeuuid_for_time(datetime(4000, 1, 1, tzinfo=UTC))
    far_past = timeuuid_for_time(datetime(1600, 1, 1, tzinfo=UTC))
    assert store.history(chat_id=chat_id, limit=10, before=far_future) == newest_first
    assert store.history(chat_id=chat_id, limit=10, after=far_past) == newest_first
    assert store.get_message(chat_id=chat_id, message_id=far_future) is None


def test_a_page_its_bounds_bucket_fills_takes_one_request() -> None:
    store = make_store(bucket_seconds=60)
    chat_id = new_chat_id()
    early = [message(chat_id, at(BASE_UNIX + second)) for second in range(10)]
    late = [message(chat_id, at(BASE_UNIX + 300 + second)) for second in range(10)]
    store.save_messages(early + late)
    with requests_sent(store) as requests:
        # Scrolling up or catching up deep inside a busy bucket: that bucket
        # alone answers, without listing the chat's buckets.
        assert store.history(chat_id=chat_id, limit=5, before=late[-1].message_id) == late[-2:-7:-1]
        assert len(requests) == 1
        requests.clear()
        assert store.history(chat_id=chat_id, limit=5, after=early[0].message_id) == early[5:0:-1]
        assert len(requests) == 1
        requests.clear()
        # When the bound's bucket runs out, the walk lists the buckets past it and goes on.
        assert store.history(chat_id=chat_id, limit=15, before=late[-1].message_id) == (early + late[:-1])[::-1][:15]
        assert store.history(chat_id=chat_id, limit=15, after=early[0].message_id) == (early[1:] + late)[:15][::-1]
        assert len(requests) > 2


async def test_awaited_saves_and_pages_match_the_blocking_ones() -> None:
    # asave_messages and ahistory answer on the event loop with no thread
    # waiting; they must store and page exactly like their blocking twins.
    store = make_store(bucket_seconds=60)
    chat_id, sender_base = new_chat_id(), new_chat_id()
    # Three busy minutes with empty minutes between them, and one batch large
    # enough to be cut into several requests.
    sent = [
        message(chat_id, at(BASE_UNIX + minute * 60 + second), sender_id=sender_base + second % 12)
        for minute in (0, 3, 4)
        for second in range(0, 60, 2)
    ]
    await store.asave_messages(sent[:1])
    await store.asave_messages(sent[1:])
    await store.asave_messages([])  # nothing to send: it must not wait for an answer
    for one in sent[::9]:
        assert await store.find_claim(sender_id=one.sender_id, client_msg_id=one.client_msg_id) == Claim(
            message_id=one.message_id, chat_id=chat_id
        )

    with requests_sent(store) as requests:
        # Deep in a busy minute: the cursor's bucket alone fills the page.
        assert await store.ahistory(chat_id=chat_id, limit=5, before=sent[-1].message_id) == sent[-2:-7:-1]
        assert len(requests) == 1

    in_order = [m.message_id for m in sent]
    bounds: list[uuid.UUID | None] = [None, *in_order[::7], at(BASE_UNIX + 2 * 60), at(BASE_UNIX + 3600)]
    for before, after in itertools.product(bounds, bounds):
        for limit in (1, 6, 40, 200):
            expected = store.history(chat_id=chat_id, limit=limit, before=before, after=after)
            awaited = await store.ahistory(chat_id=chat_id, limit=limit, before=before, after=after)
            assert awaited == expected, (before, after, limit)
    assert await store.ahistory(chat_id=chat_id, limit=200) == sent[::-1]


async def test_an_awaited_read_reports_the_drivers_failure() -> None:
    # A single node cannot answer at consistency THREE: the node refuses the
    # read when it runs it, and the error comes back through the driver's
    # errback to the awaiting coroutine instead of leaving it waiting.
    with override_settings(
        CHAT_CASSANDRA_HOSTS=HOSTS,
        CHAT_CASSANDRA_PORT=PORT,
        CHAT_CASSANDRA_KEYSPACE=KEYSPACE,
        CHAT_CASSANDRA_CONSISTENCY="THREE",
    ):
        demanding = CassandraMessageStore()
    with pytest.raises(Exception, match="Cannot achieve consistency level THREE"):
        await demanding.find_claim(sender_id=1, client_msg_id="needs three replicas")
    # A keyspace without the tables: preparing the statement fails on the pool
    # thread, and that error reaches the coroutine as well.
    with override_settings(
        CHAT_CASSANDRA_HOSTS=HOSTS,
        CHAT_CASSANDRA_PORT=PORT,
        CHAT_CASSANDRA_KEYSPACE="system",
        CHAT_CASSANDRA_AUTO_SCHEMA=False,
    ):
        store = CassandraMessageStore()
    with pytest.raises(Exception, match="table client_message_claims does not exist"):
        await store.find_claim(sender_id=1, client_msg_id="nowhere")
    with pytest.raises(Exception, match="table messages_by_chat does not exist"):
        await store.ahistory(chat_id=1, limit=5, before=at(BASE_UNIX))


def test_history_skips_years_of_empty_buckets_quickly() -> None:
    # One-second buckets: 25 years apart is ~790 million empty buckets.
    store = make_store(bucket_seconds=1)
    chat_id = new_chat_id()
    old = message(chat_id, timeuuid_from_parts(timeuuid_for_time(datetime(2001, 1, 1, tzinfo=UTC)).time, 7, 7))
    new = message(chat_id, timeuuid_from_parts(timeuuid_for_time(datetime(2026, 1, 1, tzinfo=UTC)).time, 7, 7))
    store.save_messages([old, new])

    started = time.monotonic()
    assert store.history(chat_id=chat_id, limit=10) == [new, old]
    assert store.history(chat_id=chat_id, limit=10, before=new.message_id) == [old]
    assert store.history(chat_id=chat_id, limit=10, after=old.message_id) == [new]
    assert store.count_after(chat_id=chat_id, after=None, exclude_sender_id=0, cap=10) == 2
    assert time.monotonic() - started < 5


def _tricky_ids() -> list[uuid.UUID]:
    """Ids over several minutes, with runs sharing one timestamp whose clock
    sequence and node bytes straddle 0x7f/0x80: Cassandra compares those bytes
    signed, so this is where a wrong order would show."""
    ids: list[uuid.UUID] = []
    for minute in (0, 1, 4, 9, 10):
        for second in (0.0, 17.25, 59.5):
            ids.append(at(BASE_UNIX + minute * 60 + second))
    shared = BASE_UNIX + 4 * 60 + 30
    for clock_seq in (0x0000, 0x007F, 0x0080, 0x00FF, 0x3F7F, 0x3F80):
        for node in (0x000000000000, 0x7F0000000000, 0x800000000000, 0xFFFFFFFFFFFF, 0x00000000007F, 0x000000000080):
            ids.append(at(shared, clock_seq=clock_seq, node=node))
    return ids


@pytest.mark.django_db
@pytest.mark.parametrize("bucket_seconds", [1, 60, 864000])
def test_history_matches_the_orm_store(bucket_seconds: int) -> None:
    users = [get_user_model().objects.create_user(username=f"cass-cmp-{i}", password="x") for i in range(3)]
    chat = Chat.objects.create(kind=Chat.Kind.GROUP, name="comparison")
    orm, cassandra = OrmMessageStore(), make_store(bucket_seconds=bucket_seconds)
    cassandra_chat = new_chat_id()

    ids = _tricky_ids()
    senders = itertools.cycle(users)
    orm_messages: list[Message] = []
    cassandra_messages: list[Message] = []
    for message_id in ids:
        user = next(senders)
        for chat_id, into in ((chat.pk, orm_messages), (cassandra_chat, cassandra_messages)):
            into.append(
                Message(
                    message_id=message_id,
                    chat_id=chat_id,
                    sender_id=user.pk,
                    sender=user.username,
                    body=f"m {message_id}",
                    client_msg_id=str(message_id),
                )
            )
    orm.save_messages(orm_messages)
    cassandra.save_messages(cassandra_messages)

    def comparable(messages: list[Message]) -> list[tuple[uuid.UUID, int, str, str, str]]:
        return [(m.message_id, m.sender_id, m.sender, m.body, m.client_msg_id) for m in messages]

    in_order = sorted(ids, key=message_sort_key)
    # Every fourth stored id, plus bounds that are not messages: inside the
    # shared-timestamp run, in empty minutes, and before/after everything.
    bounds: list[uuid.UUID | None] = [None, *in_order[::4]]
    bounds += [
        at(BASE_UNIX + 4 * 60 + 30),
        at(BASE_UNIX + 4 * 60 + 30, clock_seq=0x0080, node=0x7FFFFFFFFFFF),
        at(BASE_UNIX + 6 * 60),
        at(BASE_UNIX - 1),
        at(BASE_UNIX + 3600),
    ]
    queries = 0
    for before, after in itertools.product(bounds, bounds):
        for limit in (1, 4, 100):
            expected = orm.history(chat_id=chat.pk, limit=limit, before=before, after=after)
            actual = cassandra.history(chat_id=cassandra_chat, limit=limit, before=before, after=after)
            assert comparable(actual) == comparable(expected), (before, after, limit)
            queries += 1
    assert queries > 1000
    # Cassandra's own order is the one message_sort_key predicts.
    assert ids_of(cassandra.history(chat_id=cassandra_chat, limit=1000)) == in_order[::-1]

    for after in bounds:
        for user in users:
            for cap in (1, 5, 999):
                expected_count = orm.count_after(chat_id=chat.pk, after=after, exclude_sender_id=user.pk, cap=cap)
                actual_count = cassandra.count_after(
                    chat_id=cassandra_chat, after=after, exclude_sender_id=user.pk, cap=cap
                )
                assert actual_count == expected_count, (after, user.pk, cap)

    orm_latest = orm.latest_messages([chat.pk])[chat.pk]
    cassandra_latest = cassandra.latest_messages([cassandra_chat])[cassandra_chat]
    assert comparable([cassandra_latest]) == comparable([orm_latest])
    for message_id in ids[::5]:
        found = cassandra.get_message(chat_id=cassandra_chat, message_id=message_id)
        assert found is not None
        assert found == next(m for m in cassandra_messages if m.message_id == message_id)


# --- chat list helpers --------------------------------------------------------


def test_latest_messages() -> None:
    store = make_store(bucket_seconds=60)
    busy, quiet, empty = new_chat_id(), new_chat_id(), new_chat_id()
    busy_messages = [message(busy, at(BASE_UNIX + minute * 60)) for minute in (0, 3, 30)]
    quiet_message = message(quiet, at(BASE_UNIX + 5))
    store.save_messages([*busy_messages, quiet_message])

    latest = store.latest_messages([busy, empty, quiet, busy])
    assert latest == {busy: busy_messages[-1], quiet: quiet_message}
    assert store.latest_messages([]) == {}
    assert store.latest_messages([empty]) == {}


def test_count_after_counts_others_up_to_the_cap() -> None:
    store = make_store(bucket_seconds=60)
    chat_id = new_chat_id()
    me, other = 1, 2
    # 12 minutes of messages: mine at even seconds, the other's at odd ones.
    messages = [
        message(chat_id, at(BASE_UNIX + minute * 60 + second), sender_id=me if second % 2 == 0 else other)
        for minute in range(12)
        for second in range(5)
    ]
    store.save_messages(messages)
    others = [m for m in messages if m.sender_id == other]  # 2 per minute: 24

    assert store.count_after(chat_id=chat_id, after=None, exclude_sender_id=me, cap=999) == len(others)
    assert store.count_after(chat_id=chat_id, after=None, exclude_sender_id=me, cap=5) == 5
    assert store.count_after(chat_id=chat_id, after=None, exclude_sender_id=other, cap=999) == 36
    assert store.count_after(chat_id=chat_id, after=None, exclude_sender_id=me, cap=0) == 0
    marker = messages[30].message_id  # minute 6, second 0
    assert store.count_after(chat_id=chat_id, after=marker, exclude_sender_id=me, cap=999) == 12
    assert store.count_after(chat_id=chat_id, after=marker, exclude_sender_id=me, cap=3) == 3
    assert store.count_after(chat_id=chat_id, after=messages[-1].message_id, exclude_sender_id=me, cap=999) == 0
    empty_minute_marker = at(BASE_UNIX + 100 * 60)
    assert store.count_after(chat_id=chat_id, after=empty_minute_marker, exclude_sender_id=me, cap=999) == 0
    assert store.count_after(chat_id=new_chat_id(), after=None, exclude_sender_id=me, cap=999) == 0


def test_the_store_speaks_native_protocol_4_unless_told_otherwise(store: CassandraMessageStore) -> None:
    # The driver frames protocol 5 in pure Python; 4 costs less client CPU per request.
    assert store.session.cluster.protocol_version == 4
    with override_settings(CHAT_CASSANDRA_PROTOCOL_VERSION=6), pytest.raises(ValueError, match="must be 4 or 5"):
        CassandraMessageStore()


@pytest.mark.skipif("CHAT_CASSANDRA_PORT" in os.environ, reason="checks the project's own node")
def test_the_projects_node_maps_sstables_and_caches_chunks(store: CassandraMessageStore) -> None:
    # scripts/services/cassandra.sh: history pages read at random depths (docs/services.md).
    settings = dict(
        store.session.execute(
            "SELECT name, value FROM system_views.settings"
            " WHERE name IN ('disk_access_mode', 'file_cache_enabled', 'file_cache_size')"
        ).all()
    )
    assert settings == {"disk_access_mode": "mmap", "file_cache_enabled": "true", "file_cache_size": "256MiB"}


def test_sync_schema_is_idempotent(store: CassandraMessageStore) -> None:
    store.sync_schema()
    store.sync_schema()
    chat_id = new_chat_id()
    stored = message(chat_id, new_message_id())
    store.save_messages([stored])
    assert store.latest_messages([chat_id]) == {chat_id: stored}
    assert timedelta(0) <= datetime.now(UTC) - stored.sent_at < timedelta(minutes=5)


def test_store_reconnects_after_sessions_are_closed(store: CassandraMessageStore) -> None:
    chat_id = new_chat_id()
    stored = message(chat_id, new_message_id())
    store.save_messages([stored])
    close_sessions()
    assert store.get_message(chat_id=chat_id, message_id=stored.message_id) == stored


def test_warm_up_connects_before_the_first_read_needs_it() -> None:
    close_sessions()
    store = make_store()
    store.warm_up()
    # Connected, and the statements of a send's binding read and of both
    # kinds of history page are prepared, the bucket lists of the awaited
    # walk included (the event loop reads only prepared statements itself).
    session = store._session
    assert session is not None and not session.is_shutdown
    prepared = list(store._statements)
    claims, buckets = f"FROM {KEYSPACE}.client_message_claims", f"FROM {KEYSPACE}.chat_buckets"
    for part in (
        claims,
        "AND message_id < ? LIMIT ?",
        f"{buckets} WHERE chat_id = ? AND bucket <= ? LIMIT ?",
        f"{buckets} WHERE chat_id = ? LIMIT ?",
    ):
        assert any(part in cql for cql in prepared), (part, prepared)
    chat_id = new_chat_id()
    store.save_messages([message(chat_id, new_message_id(), body="m1")])
    assert [m.body for m in store.history(chat_id=chat_id, limit=5)] == ["m1"]
    assert store._session is session


def test_a_store_that_cannot_connect_at_start_is_reported_not_raised() -> None:
    unreachable = free_port()
    backends = {**settings.CHAT_BACKENDS, "message_store": "messaging.backends.cassandra_store.CassandraMessageStore"}
    with override_settings(CHAT_CASSANDRA_PORT=unreachable, CHAT_BACKENDS=backends):
        reset_backends()
        try:
            outcomes = warm_up_backends(("message_store",))
        finally:
            reset_backends()
    assert list(outcomes) == ["message_store"]
    assert outcomes["message_store"].startswith("failed: NoHostAvailable"), outcomes
