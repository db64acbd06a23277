"""A bounded, per-process memo of answers checked recently.

Hot read paths (the bearer token behind every API call, the membership behind
every history page) ask the database the same question many times a second.
``Recent`` keeps an answer for ``ttl()`` seconds, so a change (a deactivated
user, a removed member) takes effect within that bound on every process.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    """``key -> value`` for at most ``ttl()`` seconds and ``size()`` keys (the
    least recently stored go first). ``ttl`` and ``size`` are callables so
    settings overridden at run time (tests) take effect."""

    def __init__(self, *, ttl: Callable[[], float], size: Callable[[], int]) -> None:
        self._ttl = ttl
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if time.monotonic() - stored_at >= self._ttl():
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if self._ttl() <= 0:
            return
        with self._lock:
            self._entries[key] = (time.monotonic(), value)
            self._entries.move_to_end(key)
            limit = max(0, self._size())
            while len(self._entries) > limit:
                self._entries.popitem(last=False)

    def forget(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
