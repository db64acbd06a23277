"""Time-ordered message ids (version 1 UUIDs, Cassandra's ``timeuuid``).

The id is made where the message enters the system, so every store orders
history the same way and the id says when the message was sent.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import lru_cache

# 100 ns intervals between the UUID epoch (1582-10-15) and the Unix epoch.
_UUID_EPOCH_OFFSET = 0x01B21DD213814000
_UUID_EPOCH = datetime(1582, 10, 15, tzinfo=UTC)

_lock = threading.Lock()
_last_timestamp = 0
# A random node and clock sequence per process instead of the MAC address:
# nothing about the host leaks into ids, and two processes on one host differ.
_clock_seq = secrets.randbits(14)
_node = secrets.randbits(48) | 0x010000000000  # multicast bit marks a random node


def new_message_id() -> uuid.UUID:
    """A fresh timeuuid, strictly increasing within this process."""
    global _last_timestamp
    with _lock:
        timestamp = time.time_ns() // 100 + _UUID_EPOCH_OFFSET
        if timestamp <= _last_timestamp:
            timestamp = _last_timestamp + 1
        _last_timestamp = timestamp
    return timeuuid_from_parts(timestamp, _clock_seq, _node)


def timeuuid_from_parts(timestamp: int, clock_seq: int, node: int) -> uuid.UUID:
    time_low = timestamp & 0xFFFFFFFF
    time_mid = (timestamp >> 32) & 0xFFFF
    time_hi_version = ((timestamp >> 48) & 0x0FFF) | (1 << 12)
    clock_seq_low = clock_seq & 0xFF
    clock_seq_hi_variant = ((clock_seq >> 8) & 0x3F) | 0x80
    return uuid.UUID(fields=(time_low, time_mid, time_hi_version, clock_seq_hi_variant, clock_seq_low, node))


def timeuuid_for_time(moment: datetime) -> uuid.UUID:
    """The smallest-node timeuuid of a moment: a bound for time-range queries."""
    timestamp = (moment - _UUID_EPOCH) // timedelta(microseconds=1) * 10
    return timeuuid_from_parts(timestamp, 0, 0)


def message_id_time(message_id: uuid.UUID) -> datetime:
    return _UUID_EPOCH + timedelta(microseconds=message_id.time // 10)


def message_id_isoformat(message_id: uuid.UUID) -> str:
    """``message_id_time`` as ISO 8601 UTC, microseconds and a "Z": the
    ``sent_at`` of every message payload. A history page formats fifty of
    them. Through datetime one cost about 8 us; through ``time.strftime`` per
    second 6 us, because messages deep in a history rarely share a second.
    This takes the timestamp from the id's integer, formats each day's date
    once and looks up the time of day in tables (about 2.7 us). (A timeuuid's
    time lies between 1582 and 5236, so the year always has four digits.)"""
    bits = message_id.int
    timestamp = (((bits >> 64) & 0x0FFF) << 48) | (((bits >> 80) & 0xFFFF) << 32) | (bits >> 96)
    seconds, micros = divmod((timestamp - _UUID_EPOCH_OFFSET) // 10, 1_000_000)
    day, second_of_day = divmod(seconds, 86_400)
    minute_of_day, second = divmod(second_of_day, 60)
    return f"{_utc_day_prefix(day)}{_MINUTE_PREFIXES[minute_of_day]}{_SECOND_PREFIXES[second]}{micros:06d}Z"


@lru_cache(maxsize=4096)
def _utc_day_prefix(day: int) -> str:
    return time.strftime("%Y-%m-%dT", time.gmtime(day * 86_400))


_MINUTE_PREFIXES = [f"{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60)]
_SECOND_PREFIXES = [f"{second:02d}." for second in range(60)]


def message_sort_key(message_id: uuid.UUID) -> str:
    """A string whose order is Cassandra's timeuuid order.

    Cassandra compares the timestamp first, then the remaining eight bytes as
    signed bytes; flipping each byte's sign bit makes that an unsigned order.
    """
    rest = bytes(byte ^ 0x80 for byte in message_id.bytes[8:])
    return f"{message_id.time:015x}{rest.hex()}"


def parse_message_id(raw: object) -> uuid.UUID | None:
    """The timeuuid in ``raw``, or None when ``raw`` is not one."""
    if not isinstance(raw, str):
        return None
    try:
        parsed = uuid.UUID(raw)
    except ValueError:
        return None
    if parsed.version != 1:
        return None
    return parsed
