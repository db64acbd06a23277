"""The small interfaces behind which the message path's engines sit.

Settings (``CHAT_BACKENDS``) choose an implementation of each; the gateway and
the dispatcher only ever talk to these.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from messaging.types import Message


class MessageStore(Protocol):
    """Durable history. Every method is synchronous (run it off the event loop)."""

    def claim_client_msg_id(
        self, *, sender_id: int, client_msg_id: str, chat_id: int, message_id: uuid.UUID
    ) -> tuple[uuid.UUID, int]:
        """Bind (sender, client_msg_id) to (``message_id``, ``chat_id``) unless
        already bound; return the (message_id, chat_id) it is bound to."""

    def save_messages(self, messages: Sequence[Message]) -> None:
        """Store messages; saving one that is already stored changes nothing."""

    def get_message(self, *, chat_id: int, message_id: uuid.UUID) -> Message | None: ...

    def history(
        self,
        *,
        chat_id: int,
        limit: int,
        before: uuid.UUID | None = None,
        after: uuid.UUID | None = None,
    ) -> list[Message]:
        """Newest first. With ``after`` (and no ``before``) the ``limit`` messages
        right after it, so a client catching up walks forward without gaps."""

    def latest_messages(self, chat_ids: Sequence[int]) -> dict[int, Message]: ...

    def count_after(self, *, chat_id: int, after: uuid.UUID | None, exclude_sender_id: int, cap: int) -> int:
        """How many messages follow ``after`` from senders other than the given
        one, counting at most ``cap``."""


class MessageBus(Protocol):
    """Where the gateway hands accepted messages to the dispatchers."""

    async def publish(self, message: Message) -> None:
        """Return once the bus has durably accepted the message (keyed by
        ``chat_id``); raise ``messaging.errors.Unavailable`` otherwise."""
