"""The dispatcher loop of the real engines: a Kafka consumer in the group
``dispatchers``, hosted by a Celery worker (see ``chatsite/celery.py``).

At-least-once underneath: offsets are committed only after a batch is stored
and delivered. If the worker dies, the group rebalances and another
dispatcher replays its uncommitted batches; the store's upsert by message_id
keeps one copy.

Offsets are committed at most once per ``CHAT_DISPATCH_COMMIT_INTERVAL_SECONDS``
(and when the partitions fall idle), not after every batch: below saturation
a batch is usually one message, and a commit per batch was one more Kafka
request per message. The price is a longer replay after a crash, at most that
interval's batches. Partitions the group takes away, and a stopping
dispatcher, commit what was finished first and wait for the answer, so a
rebalance replays nothing. A commit is sent without waiting for the broker's
answer (the next poll carries it); one that fails or is lost only means its
batches may be replayed, as above.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import orjson
from django.conf import settings
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from chatsite.event_loop import configured_event_loop, loop_kind, new_event_loop
from messaging.backends import warm_up_backends
from messaging.dispatcher import dispatch_messages
from messaging.types import Message

logger = logging.getLogger(__name__)


class KafkaDispatcher:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.messages = 0
        self.failures = 0
        self.assigned: list[str] = []
        self.commits = 0
        self.event_loop: str | None = None
        # Batches delivered since the last commit, and when that commit went out.
        self._uncommitted = 0
        self._last_commit = time.monotonic()

    def start(self) -> None:
        # A bad CHAT_EVENT_LOOP stops the worker starting this, rather than
        # the thread below, which would leave a worker that dispatches nothing.
        configured_event_loop()
        self._thread = threading.Thread(target=self._run, name="kafka-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def info(self) -> dict[str, Any]:
        return {
            "running": self._thread is not None and self._thread.is_alive(),
            "batches": self.batches,
            "messages": self.messages,
            "failures": self.failures,
            "commits": self.commits,
            "assigned": self.assigned,
            "event_loop": self.event_loop,
        }

    def _consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.CHAT_KAFKA_BOOTSTRAP_SERVERS,
            group_id=settings.CHAT_KAFKA_GROUP,
            client_id=f"dispatcher-{settings.CHAT_SERVER_ID}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.CHAT_DISPATCH_BATCH_SIZE,
            session_timeout_ms=settings.CHAT_KAFKA_SESSION_TIMEOUT_MS,
            # Nothing reads kafka-python's client-side metrics; recording them
            # costs CPU on every fetch.
            metrics_enabled=False,
        )
        consumer.subscribe([settings.CHAT_KAFKA_TOPIC], listener=_CommitOnRevoke(self, consumer))
        return consumer

    def _run(self) -> None:
        # One event loop for this thread's whole life: the channel layer and
        # Redis pools it opens stay usable from batch to batch.
        loop = new_event_loop()
        self.event_loop = loop_kind(loop)
        logger.info("dispatcher consuming %s (event loop: %s)", settings.CHAT_KAFKA_TOPIC, self.event_loop)
        # The store, before the first batch needs it; the dispatcher publishes nothing.
        warm_up_backends(("message_store",))
        consumer: KafkaConsumer | None = None
        try:
            while not self._stop.is_set():
                try:
                    if consumer is None:
                        consumer = self._consumer()
                    self._poll_once(consumer, loop)
                except Exception:
                    self.failures += 1
                    logger.exception("dispatcher loop failed; reconnecting to Kafka")
                    if consumer is not None:
                        consumer.close(autocommit=False)
                        consumer = None
                    # Whoever reads those partitions next replays the uncommitted batches.
                    self._uncommitted = 0
                    self._stop.wait(settings.CHAT_DISPATCH_RETRY_SECONDS)
        finally:
            if consumer is not None:
                self.commit_finished(consumer, why="stop")
                consumer.close(autocommit=False)
            loop.close()

    def commit_finished(self, consumer: KafkaConsumer, *, why: str) -> None:
        """Commit every finished batch and wait for the broker's answer."""
        if not self._uncommitted:
            return
        try:
            consumer.commit()
        except Exception:
            # Not committed: the next owner of the partitions replays them.
            logger.warning("committing on %s failed", why, exc_info=True)
        else:
            self._mark_committed()

    def _mark_committed(self) -> None:
        self._uncommitted = 0
        self._last_commit = time.monotonic()
        self.commits += 1

    def _commit_if_due(self, consumer: KafkaConsumer, *, idle: bool) -> None:
        if not self._uncommitted:
            return
        if idle or time.monotonic() - self._last_commit >= settings.CHAT_DISPATCH_COMMIT_INTERVAL_SECONDS:
            consumer.commit_async(callback=self._committed)
            self._mark_committed()

    def _committed(self, offsets: Any, response: Any) -> None:
        if isinstance(response, Exception):
            logger.warning("committing offsets %s failed: %r", offsets, response)

    def _poll_once(self, consumer: KafkaConsumer, loop: asyncio.AbstractEventLoop) -> None:
        polled: dict[TopicPartition, list[ConsumerRecord]] = consumer.poll(
            timeout_ms=500, max_records=settings.CHAT_DISPATCH_BATCH_SIZE
        )
        self.assigned = sorted(f"{tp.topic}-{tp.partition}" for tp in consumer.assignment())
        if not polled:
            self._commit_if_due(consumer, idle=True)
            return
        messages = []
        for partition_records in polled.values():
            for record in partition_records:
                try:
                    messages.append(Message.from_bus_record(orjson.loads(record.value)))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    # A record no gateway wrote: retrying cannot fix it, so log and move on.
                    logger.error("skipping undecodable record %s-%d@%d", record.topic, record.partition, record.offset)
        try:
            loop.run_until_complete(dispatch_messages(messages))
        except Exception:
            # Rewind to the batch start so the same records come back.
            for partition, partition_records in polled.items():
                consumer.seek(partition, partition_records[0].offset)
            raise
        self._uncommitted += 1
        self.batches += 1
        self.messages += len(messages)
        self._commit_if_due(consumer, idle=False)


class _CommitOnRevoke(ConsumerRebalanceListener):
    """Partitions leaving this dispatcher carry their finished batches' offsets
    with them, so their next owner starts where this one stopped."""

    def __init__(self, dispatcher: KafkaDispatcher, consumer: KafkaConsumer) -> None:
        self._dispatcher = dispatcher
        self._consumer = consumer

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._dispatcher.commit_finished(self._consumer, why="rebalance")

    def on_partitions_assigned(self, assigned: Any) -> None:
        pass
