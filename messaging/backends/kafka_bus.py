"""The bus of the real engines: Kafka topic ``incoming_messages`` keyed by chat_id.

The producer is idempotent with ``acks=all``: ``publish`` returns only once
every in-sync replica has the record, which is when the gateway acks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import orjson
from django.conf import settings
from kafka import KafkaProducer
from kafka.errors import KafkaError

from messaging.errors import Unavailable
from messaging.types import Message

logger = logging.getLogger(__name__)


def chat_key(chat_id: int) -> bytes:
    return str(chat_id).encode()


class KafkaMessageBus:
    def __init__(self) -> None:
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._retry_connect_at = 0.0

    def producer(self) -> KafkaProducer:
        """The shared producer; connecting blocks (call it off the event loop)."""
        with self._lock:
            if self._producer is None:
                # After a failed connect, refuse at once for a while instead of
                # making every send wait for another bootstrap attempt.
                if time.monotonic() < self._retry_connect_at:
                    raise Unavailable("the message bus is unavailable; retry with the same client_msg_id")
                try:
                    self._producer = self._connect()
                except KafkaError as exc:
                    self._retry_connect_at = time.monotonic() + settings.CHAT_KAFKA_RECONNECT_BACKOFF_SECONDS
                    logger.warning("cannot connect to Kafka at %s: %r", settings.CHAT_KAFKA_BOOTSTRAP_SERVERS, exc)
                    raise Unavailable("the message bus is unavailable; retry with the same client_msg_id") from exc
            return self._producer

    def warm_up(self) -> None:
        self.producer()

    def _connect(self) -> KafkaProducer:
        producer = self._new_producer()
        try:
            # send() waits up to max_block_ms for the topic's partitions when it
            # has none, and publish() calls it on the event loop. Fetching them
            # here, off the loop, leaves send() nothing to wait for: kafka-python
            # keeps them while the broker is away, so a send then waits in
            # publish()'s timeout, which yields to the loop.
            producer.partitions_for(settings.CHAT_KAFKA_TOPIC)
        except KafkaError:
            producer.close(timeout=0)
            raise
        return producer

    def _new_producer(self) -> KafkaProducer:
        return KafkaProducer(
            bootstrap_servers=settings.CHAT_KAFKA_BOOTSTRAP_SERVERS,
            client_id=f"chat-gateway-{settings.CHAT_SERVER_ID}",
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.CHAT_KAFKA_LINGER_MS,
            # Bounded waits: a send that cannot be buffered fails fast
            # and the client is told "unavailable" instead of hanging.
            max_block_ms=settings.CHAT_KAFKA_MAX_BLOCK_MS,
            request_timeout_ms=settings.CHAT_KAFKA_REQUEST_TIMEOUT_MS,
            retries=settings.CHAT_KAFKA_RETRIES,
            bootstrap_timeout_ms=settings.CHAT_KAFKA_BOOTSTRAP_TIMEOUT_MS,
            # kafka-python's client-side metrics record about twenty samples
            # per send (a quarter of the producer thread's profile), and
            # nothing reads them.
            metrics_enabled=False,
        )

    async def publish(self, message: Message) -> None:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if accepted.done():
                return  # timed out already
            if error is None:
                accepted.set_result(None)
            else:
                accepted.set_exception(error)

        # kafka-python calls these on its I/O thread; hop back to our loop.
        def resolve(_: Any) -> None:
            loop.call_soon_threadsafe(settle, None)

        def reject(error: BaseException) -> None:
            loop.call_soon_threadsafe(settle, error)

        producer = self._producer if self._producer is not None else await asyncio.to_thread(self.producer)
        try:
            future = producer.send(
                settings.CHAT_KAFKA_TOPIC,
                key=chat_key(message.chat_id),
                value=orjson.dumps(message.to_bus_record()),
            )
        except KafkaError as exc:
            raise Unavailable("the message bus is unavailable; retry with the same client_msg_id") from exc
        future.add_callback(resolve)
        future.add_errback(reject)
        try:
            await asyncio.wait_for(accepted, timeout=settings.CHAT_KAFKA_PUBLISH_TIMEOUT_SECONDS)
        except (KafkaError, TimeoutError) as exc:
            logger.warning("publishing message %s failed: %r", message.message_id, exc)
            raise Unavailable("the message bus did not accept the message; retry with the same client_msg_id") from exc

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
