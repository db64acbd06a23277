"""The asyncio event loop every server process runs on.

A chat server's main thread is the one place every frame, ack and delivery
passes through, and at moderate rates it wakes for nearly every message.
uvloop runs the loop's own work (polling, timers, callbacks) in C: at half
the full pipeline's saturation rate it took about 6% off the chat servers' CPU
and a quarter off the end-to-end p50 and p99 (docs/performance.md, ninth
pass).

The choice comes from the environment (``CHAT_EVENT_LOOP``), not from Django
settings, because a chat server's loop exists before settings are read:
daphne makes its reactor's loop when ``daphne.server`` is imported, which
Django's app registry does for the ``daphne`` app. So ``manage.py`` installs
the policy before Django starts (chat servers, ``make run``). The dispatcher
makes its own loop in its thread with ``new_event_loop``. Nothing else sets
a policy: importing the project changes no loop of the importer's.
"""

from __future__ import annotations

import asyncio
import os

EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT_EVENT_LOOP = "uvloop"


class EventLoopConfigError(ValueError):
    pass


def configured_event_loop() -> str:
    """``CHAT_EVENT_LOOP``: ``uvloop`` (the default) or ``asyncio`` (the standard library's)."""
    choice = os.environ.get("CHAT_EVENT_LOOP", DEFAULT_EVENT_LOOP).strip().lower() or DEFAULT_EVENT_LOOP
    if choice not in EVENT_LOOPS:
        raise EventLoopConfigError(f"CHAT_EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}, not {choice!r}")
    return choice


def install_event_loop_policy() -> str:
    """Make every loop this process creates from now on the configured kind,
    and return that kind. Loops that already exist keep theirs; ``asyncio``
    leaves the standard library's policy in place."""
    choice = configured_event_loop()
    if choice == "uvloop":
        import uvloop

        if not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy):
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return choice


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the configured kind, whatever the process's policy."""
    if configured_event_loop() == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: what a loop is, for start-up lines and checks."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
