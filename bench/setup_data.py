"""Data setup for a project target, run with the target's environment (its
database, Cassandra keyspace, ...).

Usage: ``python -m bench.setup_data REQUEST RESPONSE`` or ``--serve`` (see ``main``).

Signing up thousands of users through the API would spend minutes hashing
passwords, and filling history through WebSockets would measure the send path
instead of the reads. So users are bulk-created with one precomputed password
hash, tokens come from ``accounts.services.token_issue``, chats from
``messaging.services.chat_create_group`` and history goes straight into the
configured message store (``messaging.backends.message_store().save_messages``).

Requests (JSON):
  {"op": "population", "prefix": str, "users": N, "chats": [[user index, ...], ...],
   "history": null or {"chat_positions": [...], ...the history fields below but "chats"}}
  {"op": "history", "chats": [{"chat_id", "sender_id", "sender"}], "per_chat": N,
   "span_seconds": S, "end_unix": T, "body_chars": B, "cursors_per_chat": C, "seed": int}

A population request may fill history too, which saves starting a second
Django process when one filler is enough.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import django

PASSWORD = "bench-password-not-secret-2026"


def population(request: dict[str, Any]) -> dict[str, Any]:
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.db import transaction

    from accounts.services import token_issue
    from messaging.services import chat_create_group

    prefix = str(request["prefix"])
    count = int(request["users"])
    hashed = make_password(PASSWORD)
    names = [f"{prefix}u{index}" for index in range(count)]
    began = time.monotonic()
    User.objects.bulk_create([User(username=name, password=hashed) for name in names], batch_size=2000)
    by_name = {user.username: user for user in User.objects.filter(username__startswith=prefix)}
    users = [by_name[name] for name in names]
    tokens: list[str] = []
    with transaction.atomic():
        for user in users:
            tokens.append(token_issue(user=user))
    chats = []
    with transaction.atomic():
        for number, members in enumerate(request["chats"]):
            creator = users[members[0]]
            chat = chat_create_group(
                creator=creator, name=f"{prefix} chat {number}", member_usernames=[names[index] for index in members]
            )
            chats.append({"chat_id": chat.pk, "members": members})
    pairs = zip(users, tokens, strict=True)
    rows = [{"id": user.pk, "username": user.username, "token": token} for user, token in pairs]
    answer: dict[str, Any] = {
        "users": rows,
        "chats": chats,
        "seconds": round(time.monotonic() - began, 2),
    }
    fill = request.get("history")
    if fill:
        senders = []
        for position in fill["chat_positions"]:
            sender = users[request["chats"][position][0]]
            senders.append({"chat_id": chats[position]["chat_id"], "sender_id": sender.pk, "sender": sender.username})
        answer["history"] = history({**fill, "chats": senders})
    return answer


def _uuid_ticks(unix_seconds: float) -> int:
    """A moment as a version 1 UUID timestamp (100 ns ticks since 1582-10-15)."""
    from messaging.ids import timeuuid_for_time

    epoch_ticks = timeuuid_for_time(datetime.fromtimestamp(0, UTC)).time
    return epoch_ticks + int(unix_seconds * 10_000_000)


class CassandraBatchSaver:
    """Writes what ``CassandraMessageStore.save_messages`` writes (the same
    ``chat_buckets`` and ``messages_by_chat`` rows through the store's own
    session and bucket function) as unlogged single-partition batches.

    ``save_messages`` sends one INSERT per message, which on this machine
    fills about 2,000 messages/s: a million would take the whole run. A batch
    of rows of one partition is one mutation for Cassandra, about ten times
    faster. Any failure falls back to ``save_messages`` for good.
    """

    ROWS_PER_BATCH = 100

    def __init__(self, store: Any) -> None:
        self.store = store
        self.buckets: set[tuple[int, int]] = set()
        self.fallback: str | None = None

    def __call__(self, messages: Sequence[Any]) -> None:
        if self.fallback is None:
            try:
                self._save(messages)
                return
            except Exception as exc:
                self.fallback = f"{type(exc).__name__}: {exc}"[:300]
        self.store.save_messages(messages)

    def _save(self, messages: Sequence[Any]) -> None:
        from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
        from cassandra.query import BatchStatement, BatchType

        store, session = self.store, self.store.session
        keyspace = store.config.keyspace
        partitions: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
        for message in messages:
            key = (message.chat_id, store.bucket(message.message_id))
            row = (*key, message.message_id, message.sender_id, message.sender, message.body, message.client_msg_id)
            partitions.setdefault(key, []).append(row)
        new_buckets = sorted(set(partitions) - self.buckets)
        if new_buckets:
            insert_bucket = session.prepare(f"INSERT INTO {keyspace}.chat_buckets (chat_id, bucket) VALUES (?, ?)")
            execute_concurrent_with_args(session, insert_bucket, new_buckets, concurrency=16, raise_on_first_error=True)
            self.buckets.update(new_buckets)
        insert = session.prepare(
            f"INSERT INTO {keyspace}.messages_by_chat"
            " (chat_id, bucket, message_id, sender_id, sender, body, client_msg_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        statements = []
        for rows in partitions.values():
            for offset in range(0, len(rows), self.ROWS_PER_BATCH):
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for row in rows[offset : offset + self.ROWS_PER_BATCH]:
                    batch.add(insert, row)
                statements.append((batch, ()))
        execute_concurrent(session, statements, concurrency=16, raise_on_first_error=True)

    @property
    def method(self) -> str:
        if self.fallback is not None:
            return f"save_messages (batches failed: {self.fallback})"
        return "unlogged single-partition batches of the store's rows"


def history(request: dict[str, Any]) -> dict[str, Any]:
    from django.conf import settings

    from messaging.backends import message_store
    from messaging.ids import timeuuid_from_parts
    from messaging.types import Message

    store = message_store()
    batches = settings.CHAT_MODE == "full" and request.get("method", "batch") == "batch"
    saver = CassandraBatchSaver(store) if batches else None
    save = saver if saver is not None else store.save_messages
    picker = random.Random(int(request.get("seed", 1)))
    per_chat = int(request["per_chat"])
    span_ticks = int(float(request["span_seconds"]) * 10_000_000)
    first_ticks = _uuid_ticks(float(request["end_unix"])) - span_ticks
    step = max(1, span_ticks // max(1, per_chat))
    body_chars = int(request.get("body_chars", 100))
    batch_size = int(request.get("batch_size", 5000))
    cursors_per_chat = int(request.get("cursors_per_chat", 1000))
    filler = "lorem ipsum dolor sit amet " * (body_chars // 27 + 1)
    began = time.monotonic()
    stored = 0
    cursors: list[list[Any]] = []
    for chat in request["chats"]:
        chat_id, sender_id, sender = int(chat["chat_id"]), int(chat["sender_id"]), str(chat["sender"])
        # One random node and clock sequence per chat, like one sending process;
        # ids spread evenly over the span, so the chat covers many store buckets.
        node = picker.getrandbits(48) | 0x010000000000
        clock_seq = picker.getrandbits(14)
        ids = [timeuuid_from_parts(first_ticks + index * step, clock_seq, node) for index in range(per_chat)]
        for offset in range(0, per_chat, batch_size):
            batch = [
                Message(
                    message_id=ids[index],
                    chat_id=chat_id,
                    sender_id=sender_id,
                    sender=sender,
                    body=f"history {index} " + filler[:body_chars],
                    client_msg_id=f"h{chat_id}-{index}",
                )
                for index in range(offset, min(per_chat, offset + batch_size))
            ]
            save(batch)
            stored += len(batch)
        # A cursor at position i pages the i messages older than it; a few reads
        # ask for the newest page (no cursor), as a client opening a chat does.
        for _ in range(cursors_per_chat):
            if picker.random() < 0.05:
                cursors.append([chat_id, "", per_chat])
            else:
                position = picker.randrange(per_chat)
                cursors.append([chat_id, str(ids[position]), position])
    method = saver.method if saver is not None else f"{type(store).__name__}.save_messages"
    return {"stored": stored, "seconds": round(time.monotonic() - began, 2), "cursors": cursors, "method": method}


def handle(request_path: Path, response_path: Path) -> None:
    request = json.loads(request_path.read_text())
    operations = {"population": population, "history": history}
    try:
        response = operations[request["op"]](request)
    except Exception:
        response = {"error": traceback.format_exc()[-6000:]}
    response_path.write_text(json.dumps(response))


def main() -> None:
    """``REQUEST RESPONSE`` handles one request; ``--serve`` handles one per
    stdin line (``REQUEST<TAB>RESPONSE``), answering ``done RESPONSE`` on
    stdout, so a run pays for Django's start-up once per target start."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    django.setup()
    try:
        if sys.argv[1:] == ["--serve"]:
            for line in sys.stdin:
                request_path, response_path = (Path(part) for part in line.rstrip("\n").split("\t"))
                handle(request_path, response_path)
                print(f"done {response_path}", flush=True)
        else:
            handle(Path(sys.argv[1]), Path(sys.argv[2]))
    finally:
        from django.conf import settings

        if settings.CHAT_MODE == "full":
            # The Cassandra driver's threads would otherwise keep the process alive a while.
            from messaging.backends.cassandra_store import close_sessions

            close_sessions()


if __name__ == "__main__":
    main()
