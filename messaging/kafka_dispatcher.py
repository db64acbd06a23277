"""The dispatcher loop of the real engines: a Kafka consumer in the group
``dispatchers``, hosted by a Celery worker (see ``chatsite/celery.py``).

At-least-once underneath: offsets are committed only after a batch is stored
and delivered. If the worker dies mid-batch, the group rebalances and another
dispatcher replays the batch; the store's upsert by message_id keeps one copy.

The commit is sent without waiting for the broker's answer (the next poll
carries it), so a batch does not wait behind the previous batch's commit. A
commit that fails or is lost only means the batch may be replayed, as above;
stopping commits synchronously.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import orjson
from django.conf import settings
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

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

    def start(self) -> None:
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
            "assigned": self.assigned,
        }

    def _consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            settings.CHAT_KAFKA_TOPIC,
            bootstrap_servers=settings.CHAT_KAFKA_BOOTSTRAP_SERVERS,
            group_id=settings.CHAT_KAFKA_GROUP,
            client_id=f"dispatcher-{settings.CHAT_SERVER_ID}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.CHAT_DISPATCH_BATCH_SIZE,
            # Nothing reads kafka-python's client-side metrics; recording them
            # costs CPU on every fetch.
            metrics_enabled=False,
        )

    def _run(self) -> None:
        # One event loop for this thread's whole life: the channel layer and
        # Redis pools it opens stay usable from batch to batch.
        loop = asyncio.new_event_loop()
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
                    self._stop.wait(settings.CHAT_DISPATCH_RETRY_SECONDS)
        finally:
            if consumer is not None:
                self._commit_before_close(consumer)
                consumer.close(autocommit=False)
            loop.close()

    def _commit_before_close(self, consumer: KafkaConsumer) -> None:
        """Every batch the loop finished is delivered: commit them and wait."""
        try:
            consumer.commit()
        except Exception:
            # Not committed: the next owner of the partitions replays them.
            logger.warning("committing on stop failed", exc_info=True)

    def _committed(self, offsets: Any, response: Any) -> None:
        if isinstance(response, Exception):
            logger.warning("committing offsets %s failed: %r", offsets, response)

    def _poll_once(self, consumer: KafkaConsumer, loop: asyncio.AbstractEventLoop) -> None:
        polled: dict[TopicPartition, list[ConsumerRecord]] = consumer.poll(
            timeout_ms=500, max_records=settings.CHAT_DISPATCH_BATCH_SIZE
        )
        self.assigned = sorted(f"{tp.topic}-{tp.partition}" for tp in consumer.assignment())
        if not polled:
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
        consumer.commit_async(callback=self._committed)
        self.batches += 1
        self.messages += len(messages)
