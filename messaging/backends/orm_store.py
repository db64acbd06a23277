"""The message store of the embedded default: the Django database."""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from chatsite.aio import off_loop
from messaging.backends.base import Claim
from messaging.ids import message_sort_key
from messaging.models import ClientMessageClaim, StoredMessage
from messaging.types import Message


def _to_message(row: StoredMessage) -> Message:
    return Message(
        message_id=row.message_id,
        chat_id=row.chat_id,
        sender_id=row.sender_id,
        sender=row.sender_username,
        body=row.body,
        client_msg_id=row.client_msg_id,
    )


logger = logging.getLogger(__name__)

_CLAIMS_TABLE = ClientMessageClaim._meta.db_table
_FIND_CLAIM_SQL = f"SELECT message_id, chat_id FROM {_CLAIMS_TABLE} WHERE sender_id = %s AND client_msg_id = %s"
_FIND_CLAIM_SQLITE = _FIND_CLAIM_SQL.replace("%s", "?")
# In WAL mode a reader does not wait for the writer; a lookup that has to
# wait longer than this is left to the I/O pool rather than stall the event loop.
_LOOP_READ_TIMEOUT_SECONDS = 0.05


_MESSAGES_TABLE = StoredMessage._meta.db_table
# Saving a stored message or binding again changes nothing (ON CONFLICT DO NOTHING).
_INSERT_MESSAGE_SQL = (
    f"INSERT INTO {_MESSAGES_TABLE}"
    " (message_id, chat_id, sender_id, sender_username, body, client_msg_id, sort_key, sent_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_INSERT_CLAIM_SQL = (
    f"INSERT INTO {_CLAIMS_TABLE} (sender_id, client_msg_id, chat_id, message_id, created_at)"
    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_HISTORY_COLUMNS = "message_id, chat_id, sender_id, sender_username, body, client_msg_id"


def _as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    # PostgreSQL answers a uuid, SQLite the 32 hex digits Django stores.
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _claim_of(found: Sequence[Any] | None) -> Claim | None:
    return None if found is None else Claim(message_id=_as_uuid(found[0]), chat_id=int(found[1]))


class _LoopReaders(threading.local):
    """A thread's own SQLite connections for reads done by its event loop,
    by database file: Django's connections are for the I/O pool."""

    def __init__(self) -> None:
        self.connections: dict[str, sqlite3.Connection] = {}

    def reader(self, path: str) -> sqlite3.Connection:
        reader = self.connections.get(path)
        if reader is None:
            reader = self.connections[path] = open_loop_reader(path)
        return reader

    def forget(self, path: str) -> None:
        """After a failed read: the next one opens a new connection."""
        reader = self.connections.pop(path, None)
        if reader is not None:
            reader.close()


def open_loop_reader(path: str) -> sqlite3.Connection:
    # mode=rw: a database that is not a file on disk (in memory) fails here
    # and is read through the pool, instead of a new empty file appearing.
    # Autocommit: a lookup holds no read transaction (and so no snapshot)
    # after it returns. The file is already in WAL mode (Django's connections set it).
    return sqlite3.connect(
        f"{Path(path).resolve().as_uri()}?mode=rw",
        uri=True,
        timeout=_LOOP_READ_TIMEOUT_SECONDS,
        isolation_level=None,
    )


def _row_to_message(row: Sequence[Any]) -> Message:
    message_id, chat_id, sender_id, sender, body, client_msg_id = row
    return Message(
        message_id=_as_uuid(message_id),
        chat_id=chat_id,
        sender_id=sender_id,
        sender=sender,
        body=body,
        client_msg_id=client_msg_id,
    )


class OrmMessageStore:
    def __init__(self) -> None:
        self._loop_readers = _LoopReaders()

    def warm_up(self) -> None:
        # Each I/O-pool thread opens its own database connection on its first
        # query; a SQLite or PostgreSQL connection takes milliseconds.
        pass

    async def find_claim(self, *, sender_id: int, client_msg_id: str) -> Claim | None:
        # Every send asks this. On SQLite the event loop reads it itself: the
        # lookup by the unique index takes about 50 us, and the I/O pool's
        # hop around it about 200 us of CPU and a GIL hand-off each way; the
        # embedded default's flood rose by a fifth to a half (docs/performance.md,
        # sixteenth pass). Any other database, or a failed read, goes through the pool.
        database = settings.DATABASES["default"]
        if database["ENGINE"] == "django.db.backends.sqlite3":
            path = str(database["NAME"])
            try:
                reader = self._loop_readers.reader(path)
                # fetchall steps the statement to its end, which ends its read
                # transaction: the next lookup sees every binding stored since.
                rows = reader.execute(_FIND_CLAIM_SQLITE, (sender_id, client_msg_id)).fetchall()
                return _claim_of(rows[0] if rows else None)
            except sqlite3.Error as error:
                self._loop_readers.forget(path)
                logger.debug("binding lookup on the event loop failed, asking the I/O pool: %s", error)
        return await off_loop(self._find_claim)(sender_id=sender_id, client_msg_id=client_msg_id)

    def _find_claim(self, *, sender_id: int, client_msg_id: str) -> Claim | None:
        # Every send asks this; the ORM's query compilation cost twenty times
        # the lookup itself (docs/performance.md), so the SQL is written out.
        with connection.cursor() as cursor:
            cursor.execute(_FIND_CLAIM_SQL, [sender_id, client_msg_id])
            return _claim_of(cursor.fetchone())

    def save_messages(self, messages: Sequence[Message]) -> None:
        # The dispatcher calls this for every batch; bulk_create built model
        # instances and compiled its INSERT each time, a tenth of a flood's
        # CPU, so the statements are written out (portable: SQLite and PostgreSQL).
        if not messages:
            return
        ops = connection.ops
        uuid_field = StoredMessage._meta.get_field("message_id")
        now = ops.adapt_datetimefield_value(timezone.now())
        message_rows = []
        claim_rows = []
        for message in messages:
            message_id = uuid_field.get_db_prep_value(message.message_id, connection)
            message_rows.append(
                (
                    message_id,
                    message.chat_id,
                    message.sender_id,
                    message.sender,
                    message.body,
                    message.client_msg_id,
                    message_sort_key(message.message_id),
                    ops.adapt_datetimefield_value(message.sent_at),
                )
            )
            if message.client_msg_id:
                claim_rows.append((message.sender_id, message.client_msg_id, message.chat_id, message_id, now))
        # One transaction: a binding the gateway finds means the message is stored.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(_INSERT_MESSAGE_SQL, message_rows)
            cursor.executemany(_INSERT_CLAIM_SQL, claim_rows)

    def get_message(self, *, chat_id: int, message_id: uuid.UUID) -> Message | None:
        row = StoredMessage.objects.filter(chat_id=chat_id, message_id=message_id).first()
        return _to_message(row) if row else None

    async def asave_messages(self, messages: Sequence[Message]) -> None:
        await off_loop(self.save_messages)(messages)

    async def ahistory(
        self,
        *,
        chat_id: int,
        limit: int,
        before: uuid.UUID | None = None,
        after: uuid.UUID | None = None,
    ) -> list[Message]:
        return await off_loop(self.history)(chat_id=chat_id, limit=limit, before=before, after=after)

    def history(
        self,
        *,
        chat_id: int,
        limit: int,
        before: uuid.UUID | None = None,
        after: uuid.UUID | None = None,
    ) -> list[Message]:
        # Every page asks this; compiling the ORM query and building model
        # instances cost several times the indexed read itself, so the SQL is
        # written out and rows stay tuples.
        where = "chat_id = %s"
        params: list[Any] = [chat_id]
        if before is not None:
            where += " AND sort_key < %s"
            params.append(message_sort_key(before))
        if after is not None:
            where += " AND sort_key > %s"
            params.append(message_sort_key(after))
        oldest_first = after is not None and before is None
        params.append(limit)
        sql = (
            f"SELECT {_HISTORY_COLUMNS} FROM {_MESSAGES_TABLE} WHERE {where}"
            f" ORDER BY sort_key {'ASC' if oldest_first else 'DESC'} LIMIT %s"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if oldest_first:
            rows.reverse()
        return [_row_to_message(row) for row in rows]

    def latest_messages(self, chat_ids: Sequence[int]) -> dict[int, Message]:
        latest: dict[int, Message] = {}
        for chat_id in chat_ids:
            row = StoredMessage.objects.filter(chat_id=chat_id).order_by("-sort_key").first()
            if row is not None:
                latest[chat_id] = _to_message(row)
        return latest

    def count_after(self, *, chat_id: int, after: uuid.UUID | None, exclude_sender_id: int, cap: int) -> int:
        rows = StoredMessage.objects.filter(chat_id=chat_id).exclude(sender_id=exclude_sender_id)
        if after is not None:
            rows = rows.filter(sort_key__gt=message_sort_key(after))
        return len(rows.values_list("pk", flat=True)[:cap])
