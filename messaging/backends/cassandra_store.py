"""The message store of the real engines: Apache Cassandra (5.0).

Schema (``ensure_schema`` creates it; ``<ks>`` is ``CHAT_CASSANDRA_KEYSPACE``)::

    CREATE TABLE <ks>.messages_by_chat (
        chat_id bigint, bucket int, message_id timeuuid,
        sender_id bigint, sender text, body text, client_msg_id text,
        PRIMARY KEY ((chat_id, bucket), message_id)
    ) WITH CLUSTERING ORDER BY (message_id DESC);
    CREATE TABLE <ks>.chat_buckets (
        chat_id bigint, bucket int, PRIMARY KEY (chat_id, bucket)
    ) WITH CLUSTERING ORDER BY (bucket DESC);
    CREATE TABLE <ks>.client_message_claims (
        sender_id bigint, client_msg_id text, message_id timeuuid, chat_id bigint,
        PRIMARY KEY ((sender_id, client_msg_id))
    );

A chat's history is split into time buckets so no partition grows without
bound; ``bucket`` is the message id's Unix time divided by
``CHAT_CASSANDRA_BUCKET_SECONDS``. ``chat_buckets`` lists the buckets a chat has
messages in, so paging visits only those instead of every empty bucket in
between. Cassandra orders ``message_id`` with the timeuuid comparator, which is
the order ``messaging.ids.message_sort_key`` gives the ORM store.

The store runs its own driver ``Cluster`` (one per process and contact point
set) rather than a ``DATABASES`` alias: the driver session is thread-safe and
shared by every thread, whereas Django connections are per thread, and an
alias would make the test runner create and drop a test keyspace for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, cast

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BatchType, tuple_factory
from django.conf import settings

from chatsite.aio import retrieve_outcome, submit_blocking
from messaging.backends.base import Claim
from messaging.backends.cql_reads import Decoder, LeanReadUnavailable, decoders_for, lean_client
from messaging.ids import message_sort_key
from messaging.types import Message

logger = logging.getLogger(__name__)

# 100 ns intervals between the UUID epoch (1582-10-15) and the Unix epoch.
_UUID_EPOCH_OFFSET = 0x01B21DD213814000
_TICKS_PER_SECOND = 10_000_000
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1

# Requests in flight for the statements run side by side outside the batches
# (new chat buckets, newest-message reads): enough to hide round trips
# without flooding a small node's native-transport queue.
_SAVE_CONCURRENCY = 64
# A dispatcher batch is written as unlogged batches, one request each instead
# of one per row. Message rows are grouped by partition (chat and bucket): a
# single-partition batch is one mutation on the replica. Bindings, one
# partition each, go at most 10 to a batch, the count past which Cassandra
# warns about batches spanning partitions (unlogged_batch_across_partitions_warn_threshold),
# and no batch carries more than 4 KiB of values, under the 5 KiB at which it
# warns about batch size (batch_size_warn_threshold); a larger message goes alone.
# A dispatch within both limits goes as one batch, messages and bindings together.
_BATCH_MAX_ROWS = 100
_BATCH_MAX_PARTITIONS = 10
_BATCH_MAX_BYTES = 4096
# How many (chat, bucket) pairs a process remembers as already recorded in
# chat_buckets; a bucket is ten days by default, so this covers every active chat.
_KNOWN_BUCKETS_MAX = 100_000
# Page size while counting unread rows: counting stops at ``cap``, so larger
# pages would only read rows that are thrown away.
_COUNT_FETCH_MAX = 1000
_BUCKET_FETCH_SIZE = 64
_PARALLEL_BUCKETS = 8

_CONNECT_TIMEOUT_SECONDS = 5.0
_REQUEST_TIMEOUT_SECONDS = 10.0

_KEYSPACE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_MESSAGE_COLUMNS = "message_id, chat_id, sender_id, sender, body, client_msg_id"


@dataclass(frozen=True, slots=True)
class CassandraConfig:
    hosts: tuple[str, ...]
    port: int
    keyspace: str
    replication: tuple[tuple[str, str], ...]
    bucket_seconds: int
    local_dc: str
    consistency: str
    auto_schema: bool
    protocol_version: int
    lean_reads: bool

    @classmethod
    def from_settings(cls, *, keyspace: str | None = None, bucket_seconds: int | None = None) -> CassandraConfig:
        hosts: Any = getattr(settings, "CHAT_CASSANDRA_HOSTS", ["127.0.0.1"])
        if isinstance(hosts, str):
            hosts = [host.strip() for host in hosts.split(",") if host.strip()]
        replication: Mapping[str, Any] = getattr(
            settings, "CHAT_CASSANDRA_REPLICATION", {"class": "SimpleStrategy", "replication_factor": 1}
        )
        config = cls(
            hosts=tuple(str(host) for host in hosts),
            port=int(getattr(settings, "CHAT_CASSANDRA_PORT", 9042)),
            keyspace=keyspace or str(getattr(settings, "CHAT_CASSANDRA_KEYSPACE", "chat")),
            replication=tuple((str(key), str(value)) for key, value in replication.items()),
            bucket_seconds=bucket_seconds or int(getattr(settings, "CHAT_CASSANDRA_BUCKET_SECONDS", 864000)),
            local_dc=str(getattr(settings, "CHAT_CASSANDRA_LOCAL_DC", "")),
            consistency=str(getattr(settings, "CHAT_CASSANDRA_CONSISTENCY", "LOCAL_QUORUM")),
            auto_schema=bool(getattr(settings, "CHAT_CASSANDRA_AUTO_SCHEMA", True)),
            protocol_version=int(getattr(settings, "CHAT_CASSANDRA_PROTOCOL_VERSION", 4)),
            lean_reads=bool(getattr(settings, "CHAT_CASSANDRA_LEAN_READS", True)),
        )
        # The keyspace is spliced into CQL text, so it must be a plain identifier.
        if not _KEYSPACE_NAME.match(config.keyspace):
            raise ValueError(f"CHAT_CASSANDRA_KEYSPACE must be a plain identifier, got {config.keyspace!r}")
        if not config.hosts:
            raise ValueError("CHAT_CASSANDRA_HOSTS is empty")
        if config.bucket_seconds <= 0:
            raise ValueError("CHAT_CASSANDRA_BUCKET_SECONDS must be positive")
        if config.consistency not in ConsistencyLevel.name_to_value:
            raise ValueError(f"CHAT_CASSANDRA_CONSISTENCY is not a consistency level: {config.consistency!r}")
        if config.protocol_version not in (4, 5):
            raise ValueError(f"CHAT_CASSANDRA_PROTOCOL_VERSION must be 4 or 5, got {config.protocol_version}")
        return config


def bucket_of(message_id: uuid.UUID, bucket_seconds: int) -> int:
    """The time bucket of a timeuuid (may fall outside CQL ``int`` for absurd ids)."""
    return (message_id.time - _UUID_EPOCH_OFFSET) // (_TICKS_PER_SECOND * bucket_seconds)


def _clamp_bucket(bucket: int) -> int:
    # Bounds come from clients and may be any timeuuid; no stored bucket lies
    # outside CQL's int, so clamping a bound never changes the answer.
    return max(_INT32_MIN, min(_INT32_MAX, bucket))


# --- connection ----------------------------------------------------------------

_sessions_lock = threading.Lock()
# (hosts, port, local_dc, consistency, protocol) -> (pid that made it, cluster, session)
_sessions: dict[tuple[tuple[str, ...], int, str, str, int], tuple[int, Any, Any]] = {}
_schema_ready: set[tuple[int, str]] = set()


def _session_for(config: CassandraConfig) -> Any:
    key = (config.hosts, config.port, config.local_dc, config.consistency, config.protocol_version)
    with _sessions_lock:
        entry = _sessions.get(key)
        # The driver's I/O threads do not survive fork(): a forked worker must
        # connect again instead of using its parent's dead session.
        if entry is not None and entry[0] == os.getpid() and not entry[2].is_shutdown:
            return entry[2]
        consistency = ConsistencyLevel.name_to_value[config.consistency]
        balancing = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.local_dc))
        cluster = Cluster(
            contact_points=list(config.hosts),
            port=config.port,
            protocol_version=config.protocol_version,
            connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            execution_profiles={
                EXEC_PROFILE_DEFAULT: ExecutionProfile(
                    load_balancing_policy=balancing,
                    consistency_level=consistency,
                    row_factory=tuple_factory,
                    request_timeout=_REQUEST_TIMEOUT_SECONDS,
                ),
            },
        )
        session = cluster.connect()
        _sessions[key] = (os.getpid(), cluster, session)
        return session


def close_sessions() -> None:
    """Shut down every driver cluster this process opened (tests, shutdown hooks)."""
    with _sessions_lock:
        entries = list(_sessions.values())
        _sessions.clear()
        _schema_ready.clear()
    for pid, cluster, _session in entries:
        if pid == os.getpid():
            cluster.shutdown()


def _replication_cql(replication: tuple[tuple[str, str], ...]) -> str:
    def quote(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    return "{" + ", ".join(f"{quote(key)}: {quote(value)}" for key, value in replication) + "}"


def _schema_statements(config: CassandraConfig) -> list[str]:
    ks = config.keyspace
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {_replication_cql(config.replication)}",
        f"""CREATE TABLE IF NOT EXISTS {ks}.messages_by_chat (
            chat_id bigint, bucket int, message_id timeuuid,
            sender_id bigint, sender text, body text, client_msg_id text,
            PRIMARY KEY ((chat_id, bucket), message_id)
        ) WITH CLUSTERING ORDER BY (message_id DESC)""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.chat_buckets (
            chat_id bigint, bucket int, PRIMARY KEY (chat_id, bucket)
        ) WITH CLUSTERING ORDER BY (bucket DESC)""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.client_message_claims (
            sender_id bigint, client_msg_id text, message_id timeuuid, chat_id bigint,
            PRIMARY KEY ((sender_id, client_msg_id))
        )""",
    ]


_TABLES = frozenset({"messages_by_chat", "chat_buckets", "client_message_claims"})


def _ensure_schema_on(session: Any, config: CassandraConfig, *, force: bool) -> None:
    marker = (id(session), config.keyspace)
    with _sessions_lock:
        if marker in _schema_ready and not force:
            return
    keyspace_meta = session.cluster.metadata.keyspaces.get(config.keyspace)
    # Skip DDL when everything exists: concurrent CREATEs from many starting
    # processes are exactly what can leave a cluster with schema disagreement.
    if force or keyspace_meta is None or not set(keyspace_meta.tables) >= _TABLES:
        for statement in _schema_statements(config):
            session.execute(statement, timeout=60)
        logger.info("cassandra schema ensured in keyspace %s", config.keyspace)
    with _sessions_lock:
        _schema_ready.add(marker)


def ensure_schema(*, keyspace: str | None = None) -> None:
    """Create the keyspace and tables of the settings' cluster if missing (idempotent)."""
    config = CassandraConfig.from_settings(keyspace=keyspace)
    _ensure_schema_on(_session_for(config), config, force=True)


# --- the store -----------------------------------------------------------------


def _to_message(row: Sequence[Any]) -> Message:
    message_id, chat_id, sender_id, sender, body, client_msg_id = row
    return Message(
        message_id=message_id,
        chat_id=chat_id,
        sender_id=sender_id,
        sender=sender,
        body=body,
        client_msg_id=client_msg_id,
    )


def _page_order(*, limit: int, before: uuid.UUID | None, after: uuid.UUID | None) -> bool | None:
    """Whether a history page walks forward (``after`` alone: the ``limit``
    oldest messages after it) or back, or None when it is empty by its bounds."""
    if limit <= 0:
        return None
    if before is not None and after is not None and message_sort_key(after) >= message_sort_key(before):
        return None
    return after is not None and before is None


def _page_of(rows: Iterable[Sequence[Any]], *, ascending: bool) -> list[Message]:
    """A page's messages, newest first, from rows in walking order."""
    page = [_to_message(row) for row in rows]
    if ascending:
        page.reverse()
    return page


@dataclass(frozen=True, slots=True)
class _WalkPlan:
    """The buckets a walk between two bounds reads, in walking order."""

    # The bound's own bucket, read alone before the chat's buckets are listed.
    first: int | None
    # The bounds of the bucket list for the rest of the walk.
    low: int | None
    high: int | None
    # The newest page's guess at the current bucket, read while the list comes.
    guess: int | None

    @property
    def rest_is_empty(self) -> bool:
        return self.low is not None and self.high is not None and self.low > self.high


def _message_row_bytes(row: tuple[Any, ...]) -> int:
    # sender, body and client_msg_id as UTF-8 plus the fixed-size columns.
    return len(row[4].encode()) + len(row[5].encode()) + len(row[6].encode()) + 48


def _claim_row_bytes(row: tuple[Any, ...]) -> int:
    return len(row[1].encode()) + 40


def _chunks(
    rows: Sequence[tuple[Any, ...]], *, max_rows: int, row_bytes: Callable[[tuple[Any, ...]], int]
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows in order, cut wherever a chunk would pass max_rows or _BATCH_MAX_BYTES."""
    chunk: list[tuple[Any, ...]] = []
    size = 0
    for row in rows:
        row_size = row_bytes(row)
        if chunk and (len(chunk) >= max_rows or size + row_size > _BATCH_MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row_size
    if chunk:
        yield chunk


def _as_request(statement: Any, rows: Sequence[tuple[Any, ...]]) -> Any:
    """One request for these rows: the bound statement itself, or an unlogged batch."""
    if len(rows) == 1:
        return statement.bind(rows[0])
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for row in rows:
        batch.add(statement, row)
    return batch


def _answers_on_loop(start: Callable[[], Sequence[Any]]) -> asyncio.Future[list[Any]]:
    """Run ``start`` on the I/O pool and await, on the event loop, the answers
    to the requests it sent (the driver futures it returns): each one's first
    page of rows, in order, or the first failure.

    Sending is blocking driver code, so a pool thread does it; but no thread
    waits for the answers: the driver's I/O thread hands each one straight to
    the loop. So a request in flight holds none of the pool's threads, which
    the database calls share, however slowly Cassandra answers. (It saves a
    thread wake-up per request as well, which did not show in the benchmark:
    docs/performance.md, fourteenth pass.)
    """
    loop = asyncio.get_running_loop()
    answers: asyncio.Future[list[Any]] = loop.create_future()

    def fail(error: BaseException) -> None:
        if not answers.done():
            answers.set_exception(error)

    def to_loop(callback: Callable[..., None], *args: Any) -> None:
        # A loop that closed while the request was out has nobody waiting for it.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)

    def begin() -> None:
        try:
            futures = list(start())
        except Exception as error:
            to_loop(fail, error)
            return
        pages: list[Any] = [None] * len(futures)
        waiting = len(futures)

        def finish() -> None:
            if not answers.done():  # failed already, or the caller gave up
                answers.set_result(pages)

        def answered(index: int, page: Any) -> None:
            nonlocal waiting
            pages[index] = page
            waiting -= 1
            if waiting == 0:
                finish()

        if not futures:
            to_loop(finish)
            return

        def on_page(page: Any, index: int) -> None:
            to_loop(answered, index, page)

        def on_error(error: BaseException) -> None:
            to_loop(fail, error)

        # The driver calls these on its I/O thread (or here, if answered already).
        for index, future in enumerate(futures):
            future.add_callbacks(callback=on_page, callback_args=(index,), errback=on_error)

    submit_blocking(begin)
    return answers


async def _atake(items: AsyncIterator[int], count: int) -> AsyncIterator[int]:
    """The next ``count`` items (fewer at the end)."""
    for _ in range(count):
        try:
            yield await anext(items)
        except StopAsyncIteration:
            return


def _execute_all(session: Any, requests: Sequence[Any]) -> None:
    """Send every request at once, then wait for all; the first failure is raised."""
    futures = [session.execute_async(request) for request in requests]
    for future in futures:
        future.result()


class CassandraMessageStore:
    def __init__(self, *, keyspace: str | None = None, bucket_seconds: int | None = None) -> None:
        self.config = CassandraConfig.from_settings(keyspace=keyspace, bucket_seconds=bucket_seconds)
        self._lock = threading.Lock()
        self._session: Any = None
        self._session_pid = 0
        self._statements: dict[str, Any] = {}
        # By CQL text: how the lean reads decode its rows (None: the driver reads it).
        self._lean_decoders: dict[str, tuple[Decoder, ...] | None] = {}
        self._known_buckets: OrderedDict[tuple[int, int], None] = OrderedDict()

    # -- plumbing

    @property
    def session(self) -> Any:
        """The shared driver session, connected (and the schema made) on first use."""
        session = self._session
        if session is not None and self._session_pid == os.getpid() and not session.is_shutdown:
            return session
        session = _session_for(self.config)
        if self.config.auto_schema:
            _ensure_schema_on(session, self.config, force=False)
        with self._lock:
            if self._session is not session:
                self._statements.clear()
            self._session, self._session_pid = session, os.getpid()
        return session

    def warm_up(self) -> None:
        # Each call connects if need be and prepares its statements; chat 0
        # does not exist, so the reads come back empty and cost little.
        self.session.execute(self._claim_lookup(), (0, ""))
        self.history(chat_id=0, limit=1, before=uuid.uuid1())
        self.history(chat_id=0, limit=1)
        # The awaited walk (ahistory) lists buckets a chunk at a time: the
        # event loop reads those itself once they are prepared (cql_reads).
        for high in (True, False):
            self._prepare(self._bucket_list_cql(low=False, high=high, ascending=False, limit=True))

    def sync_schema(self) -> None:
        _ensure_schema_on(self.session, self.config, force=True)
        # A recreated table has lost its chat_buckets rows.
        with self._lock:
            self._known_buckets.clear()

    def _prepare(self, cql: str, *, idempotent: bool = True) -> Any:
        session = self.session
        statement = self._statements.get(cql)
        if statement is None:
            # Two threads may prepare the same text; the server dedupes it.
            statement = session.prepare(cql)
            statement.is_idempotent = idempotent
            with self._lock:
                self._statements[cql] = statement
        return statement

    async def _read_on_loop(self, cql: str, params: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        """The rows of a one-page read of a prepared statement, awaited on the
        event loop: sent by the loop itself (``cql_reads``) once the driver
        has prepared the statement, through the driver otherwise, or when the
        lean read cannot be done (no connection to the node, an error frame)."""
        statement = self._statements.get(cql)
        session = self._session
        if (
            self.config.lean_reads
            and statement is not None
            and session is not None
            and self._session_pid == os.getpid()
            and not session.is_shutdown
        ):
            try:
                return await self._lean_read(session, cql, statement, params)
            except LeanReadUnavailable as error:
                logger.debug("lean read failed, reading through the driver: %s", error)
        # Preparing (the first time) and connecting block: on the I/O pool.
        (rows,) = await _answers_on_loop(lambda: [self.session.execute_async(self._prepare(cql), params)])
        return cast(Sequence[Sequence[Any]], rows)

    async def _lean_read(
        self, session: Any, cql: str, statement: Any, params: tuple[Any, ...]
    ) -> list[tuple[Any, ...]]:
        if cql in self._lean_decoders:
            decoders = self._lean_decoders[cql]
        else:
            decoders = self._lean_decoders[cql] = decoders_for(statement)
        if decoders is None:
            raise LeanReadUnavailable("the statement has a result column the lean reads do not decode")
        bound = statement.bind(params)
        # The node the driver would ask first: a replica, in the local data centre, up.
        policy = session.cluster.profile_manager.default.load_balancing_policy
        host = next(iter(policy.make_query_plan(self.config.keyspace, bound)), None)
        if host is None:
            raise LeanReadUnavailable("the driver knows no node that is up")
        client = lean_client(connect_timeout=_CONNECT_TIMEOUT_SECONDS, request_timeout=_REQUEST_TIMEOUT_SECONDS)
        return await client.rows(
            (host.endpoint.address, host.endpoint.port),
            query_id=statement.query_id,
            query_text=statement.query_string,
            values=bound.values,
            consistency=ConsistencyLevel.name_to_value[self.config.consistency],
            decoders=decoders,
        )

    def bucket(self, message_id: uuid.UUID) -> int:
        return bucket_of(message_id, self.config.bucket_seconds)

    def _bucket_range(self, chat_id: int, *, low: int | None, high: int | None, ascending: bool) -> Iterator[int]:
        """The chat's non-empty buckets within [low, high], in walking order."""
        params: list[Any] = [chat_id]
        if low is not None:
            params.append(_clamp_bucket(low))
        if high is not None:
            params.append(_clamp_bucket(high))
        cql = self._bucket_list_cql(low=low is not None, high=high is not None, ascending=ascending, limit=False)
        bound = self._prepare(cql).bind(params)
        # Pages are fetched lazily, so a short page never reads a long bucket list.
        bound.fetch_size = _BUCKET_FETCH_SIZE
        for (bucket,) in self.session.execute(bound):
            yield int(bucket)

    def _bucket_list_cql(self, *, low: bool, high: bool, ascending: bool, limit: bool) -> str:
        """The chat's buckets within the bounds asked for; its parameters are
        chat_id, then each bound and the limit that is asked for."""
        where = "chat_id = ?"
        if low:
            where += " AND bucket >= ?"
        if high:
            where += " AND bucket <= ?"
        order = " ORDER BY bucket ASC" if ascending else ""
        limit_clause = " LIMIT ?" if limit else ""
        return f"SELECT bucket FROM {self.config.keyspace}.chat_buckets WHERE {where}{order}{limit_clause}"

    def _bucket_read_cql(self, columns: str, *, lower: bool, upper: bool, ascending: bool, limit: bool) -> str:
        """One bucket's rows past the bounds asked for; its parameters are
        chat_id, bucket, then each bound and the limit that is asked for."""
        where = "chat_id = ? AND bucket = ?"
        if lower:
            where += " AND message_id > ?"
        if upper:
            where += " AND message_id < ?"
        order = " ORDER BY message_id ASC" if ascending else ""
        limit_clause = " LIMIT ?" if limit else ""
        return f"SELECT {columns} FROM {self.config.keyspace}.messages_by_chat WHERE {where}{order}{limit_clause}"

    def _walk_plan(self, *, lower: uuid.UUID | None, upper: uuid.UUID | None, ascending: bool) -> _WalkPlan:
        """Which buckets a walk between the bounds reads, and in what order."""
        # Every message after `lower` has a timestamp >= lower's, so its bucket
        # is >= lower's bucket (and likewise below `upper`).
        low = self.bucket(lower) if lower is not None else None
        high = self.bucket(upper) if upper is not None else None
        start = high if not ascending else low
        if start is not None:
            # A walk from a bound starts in the bound's own bucket, and nothing
            # in walk order can be in a bucket before it: read that bucket
            # alone, and list the chat's buckets only if it does not fill the
            # page (deep in a busy chat it almost always does: one round trip).
            first = _clamp_bucket(start)
            if ascending:
                return _WalkPlan(first=first, low=first + 1, high=high, guess=None)
            return _WalkPlan(first=first, low=low, high=first - 1, guess=None)
        # The newest page: guess the current bucket (an active chat wrote
        # there) and read it while the bucket list is fetched, which also
        # finds any newer bucket (a clock ahead of ours). A wrong guess costs
        # one short read.
        guess = None if ascending else int(time.time()) // self.config.bucket_seconds
        return _WalkPlan(first=None, low=low, high=high, guess=guess)

    def _scan(
        self,
        chat_id: int,
        *,
        lower: uuid.UUID | None,
        upper: uuid.UUID | None,
        ascending: bool,
        columns: str,
        limit: int | None,
        fetch_size: int | None = None,
    ) -> Iterator[Sequence[Any]]:
        """Rows strictly between the bounds in timeuuid order, bucket by bucket."""
        statement = self._prepare(
            self._bucket_read_cql(
                columns, lower=lower is not None, upper=upper is not None, ascending=ascending, limit=limit is not None
            )
        )
        session = self.session
        produced = 0

        def read(bucket: int) -> Any:
            params: list[Any] = [chat_id, bucket]
            if lower is not None:
                params.append(lower)
            if upper is not None:
                params.append(upper)
            if limit is not None:
                params.append(limit - produced)
            bound = statement.bind(params)
            if fetch_size is not None:
                bound.fetch_size = fetch_size
            return session.execute_async(bound)

        def page_full() -> bool:
            return limit is not None and produced >= limit

        def rows_of(futures: Sequence[Any]) -> Iterator[Sequence[Any]]:
            nonlocal produced
            for future in futures:
                for row in future.result():
                    if page_full():
                        return
                    produced += 1
                    yield row

        plan = self._walk_plan(lower=lower, upper=upper, ascending=ascending)
        if plan.first is not None:
            yield from rows_of([read(plan.first)])
            if page_full() or plan.rest_is_empty:
                return
        guess = plan.guess
        buckets = self._bucket_range(chat_id, low=plan.low, high=plan.high, ascending=ascending)
        guessed = read(guess) if guess is not None else None
        width = 1
        while True:
            group = list(islice(buckets, width))
            if not group:
                return
            futures = []
            for bucket in group:
                if guessed is not None and bucket == guess:
                    futures.append(guessed)
                else:
                    futures.append(read(bucket))
                guessed = None
            yield from rows_of(futures)
            if page_full():
                return
            # The first bucket usually fills the page; when it does not, the
            # chat is sparse, so read the next buckets in parallel rather than
            # pay one round trip each (a few rows over-read at most).
            width = min(width * 2, _PARALLEL_BUCKETS)

    # -- MessageStore

    async def find_claim(self, *, sender_id: int, client_msg_id: str) -> Claim | None:
        # Sent from the I/O pool, not the event loop: the driver's execute_async
        # takes locks its I/O thread holds, and calling it from the chat
        # server's loop stalled every socket under load (a flood fell from
        # about 1,000 to under 350 deliveries/s). Not asyncio's default
        # executor either: its few threads (cores + 4) queued the sends of a
        # busy server. Not a lean read (cql_reads) either: read by the loop
        # itself, the lookup lowered the pipeline's flood by 6-34% in six
        # alternated pairs, with the machine's CPU at a fixed rate unchanged
        # (docs/performance.md, fifteenth pass).
        (rows,) = await _answers_on_loop(
            lambda: [self.session.execute_async(self._claim_lookup(), (sender_id, client_msg_id))]
        )
        if not rows:
            return None
        message_id, chat_id = rows[0]
        return Claim(message_id=message_id, chat_id=int(chat_id))

    def _claim_lookup(self) -> Any:
        return self._prepare(
            f"SELECT message_id, chat_id FROM {self.config.keyspace}.client_message_claims"
            " WHERE sender_id = ? AND client_msg_id = ?"
        )

    def save_messages(self, messages: Sequence[Message]) -> None:
        _execute_all(self.session, self._save_requests(messages))

    async def asave_messages(self, messages: Sequence[Message]) -> None:
        await _answers_on_loop(lambda: [self.session.execute_async(r) for r in self._save_requests(messages)])

    def _save_requests(self, messages: Sequence[Message]) -> list[Any]:
        """The requests that write these messages and their bindings, sent at
        once. Blocking: first it records any bucket the store has not seen."""
        if not messages:
            return []
        ks = self.config.keyspace
        session = self.session
        rows = [
            (
                message.chat_id,
                self._storable_bucket(message.message_id),
                message.message_id,
                message.sender_id,
                message.sender,
                message.body,
                message.client_msg_id,
            )
            for message in messages
        ]
        with self._lock:
            new_buckets = sorted({(row[0], row[1]) for row in rows if (row[0], row[1]) not in self._known_buckets})
        # Record the buckets before the messages: a message whose bucket is not
        # listed would be invisible to history, while a listed empty bucket
        # (messages failed after it) costs one read and the dispatcher's retry fills it.
        if new_buckets:
            insert_bucket = self._prepare(f"INSERT INTO {ks}.chat_buckets (chat_id, bucket) VALUES (?, ?)")
            execute_concurrent_with_args(session, insert_bucket, new_buckets, concurrency=_SAVE_CONCURRENCY)
            with self._lock:
                for key in new_buckets:
                    self._known_buckets[key] = None
                while len(self._known_buckets) > _KNOWN_BUCKETS_MAX:
                    self._known_buckets.popitem(last=False)
        # A plain INSERT is an upsert, so saving a stored message again rewrites
        # the same values: the same id always carries the same content.
        insert_message = self._prepare(
            f"INSERT INTO {ks}.messages_by_chat"
            " (chat_id, bucket, message_id, sender_id, sender, body, client_msg_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        insert_claim = self._prepare(
            f"INSERT INTO {ks}.client_message_claims (sender_id, client_msg_id, message_id, chat_id)"
            " VALUES (?, ?, ?, ?)"
        )
        claims = [
            (message.sender_id, message.client_msg_id, message.message_id, message.chat_id)
            for message in messages
            if message.client_msg_id
        ]
        by_partition: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
        for row in rows:
            by_partition.setdefault((row[0], row[1]), []).append(row)
        if (
            len(by_partition) + len(claims) <= _BATCH_MAX_PARTITIONS
            and sum(map(_message_row_bytes, rows)) + sum(map(_claim_row_bytes, claims)) <= _BATCH_MAX_BYTES
        ):
            # A small dispatch (below saturation, usually one message) is one
            # request, messages and bindings together: each request costs the
            # driver and the node about as much as a few rows do.
            together = BatchStatement(batch_type=BatchType.UNLOGGED)
            for row in rows:
                together.add(insert_message, row)
            for claim in claims:
                together.add(insert_claim, claim)
            return [together]
        # Messages and their bindings are written side by side. A binding
        # found before its message is harmless: the gateway then looks the
        # message up, and publishes the retry again if it is not stored yet.
        return [
            *(
                _as_request(insert_message, chunk)
                for partition_rows in by_partition.values()
                for chunk in _chunks(partition_rows, max_rows=_BATCH_MAX_ROWS, row_bytes=_message_row_bytes)
            ),
            *(
                _as_request(insert_claim, chunk)
                for chunk in _chunks(claims, max_rows=_BATCH_MAX_PARTITIONS, row_bytes=_claim_row_bytes)
            ),
        ]

    def _storable_bucket(self, message_id: uuid.UUID) -> int:
        bucket = self.bucket(message_id)
        if bucket != _clamp_bucket(bucket):
            raise ValueError(f"message id {message_id} is too far from 1970 for {self.config.bucket_seconds}s buckets")
        return bucket

    def get_message(self, *, chat_id: int, message_id: uuid.UUID) -> Message | None:
        bucket = self.bucket(message_id)
        if bucket != _clamp_bucket(bucket):
            return None
        statement = self._prepare(
            f"SELECT {_MESSAGE_COLUMNS} FROM {self.config.keyspace}.messages_by_chat"
            " WHERE chat_id = ? AND bucket = ? AND message_id = ?"
        )
        row = self.session.execute(statement, (chat_id, bucket, message_id)).one()
        return _to_message(row) if row is not None else None

    async def ahistory(
        self,
        *,
        chat_id: int,
        limit: int,
        before: uuid.UUID | None = None,
        after: uuid.UUID | None = None,
    ) -> list[Message]:
        # The same walk as history's (_scan), with every read awaited on the loop.
        ascending = _page_order(limit=limit, before=before, after=after)
        if ascending is None:
            return []
        rows = await self._awalk(chat_id, lower=after, upper=before, ascending=ascending, limit=limit)
        return _page_of(rows, ascending=ascending)

    async def _awalk(
        self, chat_id: int, *, lower: uuid.UUID | None, upper: uuid.UUID | None, ascending: bool, limit: int
    ) -> list[Sequence[Any]]:
        """Up to ``limit`` message rows strictly between the bounds, in walking
        order: ``_scan``'s walk, bucket by bucket, as reads on the event loop."""
        cql = self._bucket_read_cql(
            _MESSAGE_COLUMNS, lower=lower is not None, upper=upper is not None, ascending=ascending, limit=True
        )
        rows: list[Sequence[Any]] = []

        def read(bucket: int) -> Awaitable[Sequence[Sequence[Any]]]:
            params = (chat_id, bucket, *(bound for bound in (lower, upper) if bound is not None), limit - len(rows))
            return self._read_on_loop(cql, params)

        plan = self._walk_plan(lower=lower, upper=upper, ascending=ascending)
        if plan.first is not None:
            rows += await read(plan.first)
            if len(rows) >= limit:
                return rows[:limit]
            if plan.rest_is_empty:
                return rows
        guess = plan.guess
        guessed = asyncio.ensure_future(read(guess)) if guess is not None else None
        buckets = self._abucket_range(chat_id, low=plan.low, high=plan.high, ascending=ascending)
        try:
            width = 1
            while True:
                group = [bucket async for bucket in _atake(buckets, width)]
                if not group:
                    return rows
                reads: list[Awaitable[Sequence[Sequence[Any]]]] = []
                for bucket in group:
                    if guessed is not None and bucket == guess:
                        reads.append(guessed)
                    else:
                        reads.append(read(bucket))
                    guess = None
                for answer in await asyncio.gather(*reads):
                    rows += answer
                if len(rows) >= limit:
                    return rows[:limit]
                width = min(width * 2, _PARALLEL_BUCKETS)
        finally:
            await buckets.aclose()
            if guessed is not None:
                # A wrong guess is never awaited: stop it.
                guessed.cancel()
                guessed.add_done_callback(retrieve_outcome)

    async def _abucket_range(
        self, chat_id: int, *, low: int | None, high: int | None, ascending: bool
    ) -> AsyncGenerator[int, None]:
        """``_bucket_range`` read on the loop, ``_BUCKET_FETCH_SIZE`` buckets a request."""
        while low is None or high is None or low <= high:
            bounds = tuple(_clamp_bucket(bound) for bound in (low, high) if bound is not None)
            cql = self._bucket_list_cql(low=low is not None, high=high is not None, ascending=ascending, limit=True)
            listed = [int(row[0]) for row in await self._read_on_loop(cql, (chat_id, *bounds, _BUCKET_FETCH_SIZE))]
            for bucket in listed:
                yield bucket
            if len(listed) < _BUCKET_FETCH_SIZE:
                return
            if ascending:
                low = listed[-1] + 1
            else:
                high = listed[-1] - 1

    def history(
        self,
        *,
        chat_id: int,
        limit: int,
        before: uuid.UUID | None = None,
        after: uuid.UUID | None = None,
    ) -> list[Message]:
        ascending = _page_order(limit=limit, before=before, after=after)
        if ascending is None:
            return []
        rows = self._scan(
            chat_id, lower=after, upper=before, ascending=ascending, columns=_MESSAGE_COLUMNS, limit=limit
        )
        return _page_of(islice(rows, limit), ascending=ascending)

    def latest_messages(self, chat_ids: Sequence[int]) -> dict[int, Message]:
        unique_ids = list(dict.fromkeys(chat_ids))
        if not unique_ids:
            return {}
        ks = self.config.keyspace
        session = self.session
        newest_bucket = self._prepare(f"SELECT bucket FROM {ks}.chat_buckets WHERE chat_id = ? LIMIT 1")
        bucket_results = execute_concurrent_with_args(
            session, newest_bucket, [(chat_id,) for chat_id in unique_ids], concurrency=_SAVE_CONCURRENCY
        )
        targets: list[tuple[int, int]] = []
        for chat_id, (_ok, result) in zip(unique_ids, bucket_results, strict=True):
            row = result.one()
            if row is not None:
                targets.append((chat_id, int(row[0])))
        newest_message = self._prepare(
            f"SELECT {_MESSAGE_COLUMNS} FROM {ks}.messages_by_chat WHERE chat_id = ? AND bucket = ? LIMIT 1"
        )
        message_results = execute_concurrent_with_args(session, newest_message, targets, concurrency=_SAVE_CONCURRENCY)
        latest: dict[int, Message] = {}
        for (chat_id, _bucket), (_ok, result) in zip(targets, message_results, strict=True):
            row = result.one()
            if row is not None:
                latest[chat_id] = _to_message(row)
            else:
                # Its newest bucket was recorded but the save that followed
                # failed; the full walk looks further down.
                page = self.history(chat_id=chat_id, limit=1)
                if page:
                    latest[chat_id] = page[0]
        return latest

    def count_after(self, *, chat_id: int, after: uuid.UUID | None, exclude_sender_id: int, cap: int) -> int:
        if cap <= 0:
            return 0
        rows = self._scan(
            chat_id,
            lower=after,
            upper=None,
            ascending=False,
            columns="sender_id",
            limit=None,
            fetch_size=min(max(cap, 50), _COUNT_FETCH_MAX),
        )
        count = 0
        for (sender_id,) in rows:
            if sender_id != exclude_sender_id:
                count += 1
                if count >= cap:
                    break
        return count
