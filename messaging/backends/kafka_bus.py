"""The bus of the real engines: Kafka topic ``incoming_messages`` keyed by chat_id.

The producer is idempotent with ``acks=all``: ``publish`` returns only once
every in-sync replica has the record, which is when the gateway acks.

A busy gateway holds its sends for a short window and lets them go together
(``SendCoalescer``): they leave in one produce request instead of one each, and
the dispatchers, Cassandra and the chat servers downstream then handle them
in one wake-up each. A quiet gateway sends at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
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


class SendCoalescer:
    """Sends at once, or holds a send for a short window and makes all the
    sends held in it together.

    Each request to Kafka, and each wake-up it causes downstream, costs about
    as much for one message as for several, so messages that travel alone
    cost a loaded machine about twice what they cost in a flood. Holding a
    send helps only when another is likely to come during the window: at a
    rate of ``r`` sends a second, a window of ``w`` seconds is expected to
    gather ``r * w`` more. So a window opens only when that is at least one,
    and a quiet gateway adds no delay. The rate is an exponentially weighted
    count of sends with a time constant of ``RATE_HORIZON_S``, so it follows a
    change of load within a second or two.

    The held sends run back to back in one callback. Each is a few hundred
    microseconds of Python that competes for the GIL with the producer's own
    thread, so on a busy server a window's sends take more than a
    millisecond; the producer's linger (``CHAT_KAFKA_LINGER_MS``, 5 ms) has to
    cover them, or the first ones leave in a request of their own.

    All of it runs on the event loop's thread, so it needs no lock.
    """

    RATE_HORIZON_S = 1.0

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._rate = 0.0
        self._rate_at = 0.0
        self._held: list[Callable[[], None]] | None = None

    def send_rate(self, now: float) -> float:
        """Sends a second, as of ``now`` (event loop time)."""
        return self._rate * math.exp((self._rate_at - now) / self.RATE_HORIZON_S)

    def submit(self, send: Callable[[], None]) -> None:
        """Call ``send`` now, or when the open window closes. ``send`` must not
        raise: it reports its failure to its own publisher."""
        if self.window_s <= 0:
            send()
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._rate = self.send_rate(now) + 1.0 / self.RATE_HORIZON_S
        self._rate_at = now
        if self._held is None:
            if self._rate * self.window_s < 1.0:
                send()
                return
            self._held = []
            loop.call_later(self.window_s, self._release)
        self._held.append(send)

    def _release(self) -> None:
        held, self._held = self._held or [], None
        for send in held:
            send()


class KafkaMessageBus:
    def __init__(self) -> None:
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._retry_connect_at = 0.0
        self._coalescer = SendCoalescer(settings.CHAT_KAFKA_COALESCE_MS / 1000)

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
        key = chat_key(message.chat_id)
        value = orjson.dumps(message.to_bus_record())

        def send() -> None:
            if accepted.done():
                return  # cancelled or timed out while held: never published
            try:
                future = producer.send(settings.CHAT_KAFKA_TOPIC, key=key, value=value)
            except KafkaError as exc:
                refused = Unavailable("the message bus is unavailable; retry with the same client_msg_id")
                refused.__cause__ = exc
                accepted.set_exception(refused)
                return
            except Exception as exc:  # raised where publish() awaits, as before; the window's other sends still go
                accepted.set_exception(exc)
                return
            future.add_callback(resolve)
            future.add_errback(reject)

        self._coalescer.submit(send)
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
