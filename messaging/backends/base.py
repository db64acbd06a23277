"""The small interfaces behind which the message path's engines sit.

Settings (``CHAT_BACKENDS``) choose an implementation of each; the gateway and
the dispatcher only ever talk to these.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from messaging.types import Message


class Claim(NamedTuple):
    """What a (sender, client_msg_id) pair is bound to."""

    message_id: uuid.UUID
    chat_id: int


class MessageStore(Protocol):
    """Durable history. The methods without ``async`` are blocking (run them
    off the event loop); the async ones are what the event loop awaits on the
    hot paths."""

    def warm_up(self) -> None:
        """Connect, and prepare what a send and a history page use, so the
        first of them after a start pays nothing extra. May raise; the store
        still connects on first use."""

    async def find_claim(self, *, sender_id: int, client_msg_id: str) -> Claim | None:
        """The binding of a stored message's (sender, client_msg_id), if any.
        Every send asks, so it is async and cheap (a key lookup)."""

    def save_messages(self, messages: Sequence[Message]) -> None:
        """Store messages and bind each one's (sender, client_msg_id) to it;
        saving one that is already stored changes nothing. A binding may be
        visible a moment before its message (the Cassandra store writes both
        side by side), so whoever finds one looks the message up before
        treating it as stored."""

    async def asave_messages(self, messages: Sequence[Message]) -> None:
        """``save_messages``, awaited on the event loop (the dispatcher's path)."""

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

    async def ahistory(
        self,
        *,
        chat_id: int,
        limit: int,
        before: uuid.UUID | None = None,
        after: uuid.UUID | None = None,
    ) -> list[Message]:
        """``history``, awaited on the event loop (the history API's path)."""

    def latest_messages(self, chat_ids: Sequence[int]) -> dict[int, Message]: ...

    def count_after(self, *, chat_id: int, after: uuid.UUID | None, exclude_sender_id: int, cap: int) -> int:
        """How many messages follow ``after`` from senders other than the given
        one, counting at most ``cap``."""


class MessageBus(Protocol):
    """Where the gateway hands accepted messages to the dispatchers."""

    def warm_up(self) -> None:
        """Connect now rather than on the first publish. Blocking; may raise."""

    async def publish(self, message: Message) -> None:
        """Return once the bus has durably accepted the message (keyed by
        ``chat_id``); raise ``messaging.errors.Unavailable`` otherwise."""


class ClaimRegistry(Protocol):
    """Binds (sender, client_msg_id) to a message id atomically for the time a
    message spends between the gateway and the store (``CHAT_CLAIM_TTL_SECONDS``).

    Older bindings are the store's (``MessageStore.find_claim``): the registry
    only has to make concurrent and quick retries agree.
    """

    async def claim(self, *, sender_id: int, client_msg_id: str, claim: Claim) -> Claim | None:
        """Bind the pair to ``claim`` unless it is bound; return the existing
        binding, or None when this call made it. Raise on an unreachable registry."""
