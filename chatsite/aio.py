"""Blocking I/O (the ORM, the Cassandra driver, Celery's broker) from async code.

Channels' ``database_sync_to_async`` is thread-sensitive: every call in the
process waits its turn on one thread, so one slow query (a Cassandra
lightweight transaction takes milliseconds) would stall every connection.
These calls are independent, so they run side by side on a pool of their own.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, wraps
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


@cache
def _io_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=settings.CHAT_IO_THREADS, thread_name_prefix="chat-io")


def off_loop(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``fn`` as a coroutine function running on the I/O pool; like
    ``database_sync_to_async``, it closes stale database connections around
    the call, and ``fn`` sees the caller's context variables.

    It is what channels' ``DatabaseSyncToAsync`` did for these calls, without
    asgiref's machinery around it, which was a fifth of a call's CPU
    (docs/performance.md, sixteenth pass). What that machinery adds is not
    used here: ``fn`` must not call ``async_to_sync``, which would then run
    its coroutine on a loop of its own rather than the caller's."""

    @wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        result: R = await run_blocking(contextvars.copy_context().run, _with_fresh_connections, fn, args, kwargs)
        return result

    return call


def _with_fresh_connections(fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


def submit_blocking(fn: Callable[[], object]) -> None:
    """Start ``fn()`` on the I/O pool without waiting for it: for blocking code
    that reports back to the event loop by itself (``loop.call_soon_threadsafe``)
    and must not raise."""
    _io_pool().submit(fn)


def retrieve_outcome(future: asyncio.Future[Any]) -> None:
    """A done callback for a future nobody may await: its failure counts as
    seen, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


async def run_blocking(fn: Callable[..., R], *args: object) -> R:
    """``fn(*args)`` on the same I/O pool, for blocking calls that use no
    Django database (the Cassandra driver): no connection housekeeping, which
    would also touch the database where tests forbid it."""
    return await asyncio.get_running_loop().run_in_executor(_io_pool(), fn, *args)
