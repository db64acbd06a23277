"""The dispatcher: what happens to a batch of messages the bus hands over.

Store first (idempotent by message_id), then find each member's live devices
and deliver. The same code runs behind every bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from chatsite.aio import off_loop
from messaging import selectors
from messaging.backends import message_store
from messaging.delivery import Delivery, deliver, encode_frame
from messaging.types import Message
from presence.backends import session_registry
from presence.registry import Connection


async def dispatch_messages(messages: Sequence[Message]) -> None:
    if not messages:
        return
    # The recipients are looked up while the batch is being stored: both are
    # round trips to other servers, and only delivery has to wait for the store.
    # A failure of either is raised only once both are done: nothing is left
    # running when the caller rewinds the batch.
    saved, looked_up = await asyncio.gather(
        message_store().asave_messages(messages),
        _recipients({m.chat_id for m in messages}),
        return_exceptions=True,
    )
    if isinstance(saved, BaseException):
        raise saved
    if isinstance(looked_up, BaseException):
        raise looked_up
    members_by_chat, devices = looked_up
    deliveries: list[Delivery] = []
    offline_by_message: list[tuple[Message, list[int]]] = []
    for message in messages:
        members = members_by_chat.get(message.chat_id, [])
        connections = [connection for user_id in members for connection in devices.get(user_id, [])]
        deliveries.append((encode_frame(message.to_frame()), connections))
        offline = [user_id for user_id in members if user_id not in devices and user_id != message.sender_id]
        if offline:
            offline_by_message.append((message, offline))
    # One fan-out event per chat server for the whole batch.
    await deliver(deliveries)
    if offline_by_message:
        await off_loop(_hand_to_push)(offline_by_message)


async def _recipients(chat_ids: set[int]) -> tuple[dict[int, list[int]], dict[int, list[Connection]]]:
    """Each chat's member ids, and the live devices of all of them."""
    members_by_chat = await off_loop(selectors.chat_member_ids)(chat_ids)
    recipients = {user_id for members in members_by_chat.values() for user_id in members}
    return members_by_chat, await session_registry().lookup(recipients)


def _hand_to_push(offline_by_message: list[tuple[Message, list[int]]]) -> None:
    from messaging.tasks import push_notify

    for message, user_ids in offline_by_message:
        push_notify.delay(
            user_ids=user_ids,
            chat_id=message.chat_id,
            message_id=str(message.message_id),
            sender=message.sender,
            preview=message.body,
        )
