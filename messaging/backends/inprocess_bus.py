"""The bus of the embedded default: a queue inside the chat server process.

One queue and one dispatcher task per event loop keep every chat's messages
in order. A full queue refuses new messages (backpressure: the client gets
``unavailable`` and retries). Not durable: messages accepted but not yet
dispatched are lost if the process dies, which is why the real engines use
Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence

from django.conf import settings

from messaging.errors import Unavailable
from messaging.types import Message

logger = logging.getLogger(__name__)

DISPATCH_ATTEMPTS = 5
RETRY_DELAY_SECONDS = 0.2


class InProcessMessageBus:
    def __init__(self) -> None:
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane] = weakref.WeakKeyDictionary()

    def warm_up(self) -> None:
        # Nothing to connect: each event loop gets its lane on its first publish.
        pass

    async def publish(self, message: Message) -> None:
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None or lane.worker.done():
            lane = _Lane()
            self._lanes[loop] = lane
        try:
            lane.queue.put_nowait(message)
        except asyncio.QueueFull as exc:
            raise Unavailable("the message bus is full; retry with the same client_msg_id") from exc

    async def drain(self) -> None:
        """Wait until everything published in this loop has been dispatched."""
        lane = self._lanes.get(asyncio.get_running_loop())
        if lane is not None:
            await lane.queue.join()


class _Lane:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=settings.CHAT_BUS_QUEUE_SIZE)
        self.worker = asyncio.get_running_loop().create_task(self._run(), name="inprocess-dispatcher")

    async def _run(self) -> None:
        # Imported here: the dispatcher imports the backends, which import this.
        from messaging.dispatcher import dispatch_messages

        while True:
            batch = [await self.queue.get()]
            while len(batch) < settings.CHAT_DISPATCH_BATCH_SIZE and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await _dispatch_with_retries(dispatch_messages, batch)
            finally:
                for _ in batch:
                    self.queue.task_done()


async def _dispatch_with_retries(
    dispatch: Callable[[Sequence[Message]], Awaitable[None]], batch: list[Message]
) -> None:
    for attempt in range(1, DISPATCH_ATTEMPTS + 1):
        try:
            await dispatch(batch)
            return
        except Exception:
            logger.exception("dispatching %d messages failed (attempt %d)", len(batch), attempt)
            await asyncio.sleep(RETRY_DELAY_SECONDS * attempt)
    logger.error("gave up dispatching %d messages: %s", len(batch), [str(m.message_id) for m in batch])
