"""A busy gateway sends its messages to Kafka in groups; a quiet one sends
each at once. Checked on the real broker through the records' CreateTime,
which the producer stamps when ``send`` is called, so the figures do not
depend on how fast the broker answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from django.test import override_settings
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from messaging.backends.kafka_bus import KafkaMessageBus
from messaging.ids import new_message_id
from messaging.types import Message
from tests.helpers import ensure_services, kafka_records, unique_name

BOOTSTRAP = ["127.0.0.1:9092"]
# Wide enough that a held send and one sent at once cannot be mistaken for
# each other on a loaded machine: at this window a send waits once the
# gateway sends 2 or more a second.
WINDOW_MS = 500
CHAT_ID = 7


@pytest.fixture
def topic() -> Iterator[str]:
    ensure_services()
    name = unique_name("test_coalesce_")
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        try:
            with override_settings(CHAT_KAFKA_TOPIC=name):
                yield name
        finally:
            admin.delete_topics([name], timeout_ms=30000)
    finally:
        admin.close()


def make_bus(window_ms: int) -> KafkaMessageBus:
    with override_settings(CHAT_KAFKA_COALESCE_MS=window_ms):
        bus = KafkaMessageBus()
        bus.warm_up()
    return bus


def message(label: str) -> Message:
    return Message(
        message_id=new_message_id(),
        chat_id=CHAT_ID,
        sender_id=1,
        sender="alice",
        body=label,
        client_msg_id=label,
    )


async def publish_at(bus: KafkaMessageBus, label: str, calls: dict[str, float]) -> None:
    calls[label] = time.time()
    await bus.publish(message(label))


def held_seconds(found: list[Any], calls: dict[str, float]) -> dict[str, float]:
    """How long each message waited between publish() and the producer's send()."""
    return {label_of(record): record.timestamp / 1000 - calls[label_of(record)] for record in found}


def label_of(record: Any) -> str:
    return str(orjson.loads(record.value)["client_msg_id"])


async def test_a_quiet_gateway_sends_each_message_at_once(topic: str) -> None:
    bus = make_bus(WINDOW_MS)
    calls: dict[str, float] = {}
    try:
        for index in range(3):
            await publish_at(bus, f"quiet-{index}", calls)
            await asyncio.sleep(1.2)  # under one send a second
    finally:
        bus.close()
    found = kafka_records(topic, expected=3, timeout_ms=5000)
    assert [label_of(record) for record in found] == ["quiet-0", "quiet-1", "quiet-2"]
    waits = held_seconds(found, calls)
    assert max(waits.values()) < WINDOW_MS / 1000 / 2, waits


async def test_a_busy_gateway_holds_sends_for_the_window_and_lets_them_go_together(topic: str) -> None:
    bus = make_bus(WINDOW_MS)
    calls: dict[str, float] = {}
    labels = [f"busy-{index:02d}" for index in range(12)]
    try:
        sends = []
        for label in labels:  # ten a second
            sends.append(asyncio.create_task(publish_at(bus, label, calls)))
            await asyncio.sleep(0.1)
        await asyncio.gather(*sends)
    finally:
        bus.close()
    found = kafka_records(topic, expected=len(labels), timeout_ms=5000)
    # Nothing lost, nothing reordered: one key, one partition, publish order.
    assert [label_of(record) for record in found] == labels
    waits = held_seconds(found, calls)
    # The first send finds no load and goes at once; once the rate is
    # known, later ones wait, but never much longer than the window.
    assert waits["busy-00"] < WINDOW_MS / 1000 / 2, waits
    assert sum(wait > WINDOW_MS / 1000 / 2 for wait in waits.values()) >= 2, waits
    assert max(waits.values()) < WINDOW_MS / 1000 + 0.3, waits
    # Held sends leave together: the producer stamps them within a few
    # milliseconds of each other, so the twelve messages share few send times.
    send_times = sorted({record.timestamp // 20 for record in found})
    assert len(send_times) <= len(labels) // 2, [record.timestamp for record in found]


async def test_a_window_of_zero_sends_everything_at_once(topic: str) -> None:
    bus = make_bus(0)
    calls: dict[str, float] = {}
    labels = [f"off-{index}" for index in range(8)]
    try:
        await asyncio.gather(*(publish_at(bus, label, calls) for label in labels))
    finally:
        bus.close()
    found = kafka_records(topic, expected=len(labels), timeout_ms=5000)
    assert sorted(label_of(record) for record in found) == labels
    waits = held_seconds(found, calls)
    assert max(waits.values()) < 0.25, waits


async def test_a_held_send_that_is_cancelled_is_not_published_and_the_rest_are(topic: str) -> None:
    bus = make_bus(WINDOW_MS)
    calls: dict[str, float] = {}
    labels = [f"cut-{index}" for index in range(6)]
    try:
        sends = {label: asyncio.create_task(publish_at(bus, label, calls)) for label in labels}
        await asyncio.sleep(0.1)  # the later sends are held in a window by now
        sends["cut-4"].cancel()
        results = await asyncio.gather(*sends.values(), return_exceptions=True)
    finally:
        bus.close()
    assert isinstance(results[4], asyncio.CancelledError)
    assert all(result is None for index, result in enumerate(results) if index != 4), results
    found = kafka_records(topic, expected=len(labels) - 1, timeout_ms=5000)
    assert [label_of(record) for record in found] == [label for label in labels if label != "cut-4"]
