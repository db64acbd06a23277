"""Cyclic garbage collection tuned for long-running server processes.

A server process holds about 160,000 objects once it has started (Django,
Channels, the Kafka and Cassandra clients), and nearly all of them live as
long as the process. Python's full collections scan every one of them while
every thread of the process waits; under load on two shared cores those
pauses measured 100-300 ms in chat servers and dispatchers (docs/performance.md,
fourth pass). Freezing what start-up made takes it out of every later scan,
and a larger first-generation threshold collects young objects less often.
"""

from __future__ import annotations

import gc

from django.conf import settings

# Allocations between young-generation collections in a serving process
# (Python's default is 700); the default of CHAT_GC_GEN0_THRESHOLD.
SERVING_YOUNG_THRESHOLD = 10_000


def tune_for_serving() -> None:
    """Call once start-up is done (imports, settings, app registry)."""
    settle_start_up(freeze=settings.CHAT_GC_FREEZE, young_threshold=settings.CHAT_GC_GEN0_THRESHOLD)


def settle_start_up(*, freeze: bool, young_threshold: int) -> None:
    """Take what exists now out of every later collection (``freeze``), and
    collect young objects every ``young_threshold`` allocations (0 keeps the
    current threshold). For any long-running process, Django or not."""
    if freeze:
        gc.freeze()
    if young_threshold > 0:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, old)
