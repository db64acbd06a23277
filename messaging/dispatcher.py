"""The dispatcher: what happens to a batch of messages the bus hands over.

Store first (idempotent by message_id), then find each member's live devices
and deliver. The same code runs behind every bus.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatsite.aio import off_loop
from messaging import selectors
from messaging.backends import message_store
from messaging.delivery import Delivery, deliver, encode_frame
from messaging.types import Message
from presence.backends import session_registry


async def dispatch_messages(messages: Sequence[Message]) -> None:
    if not messages:
        return
    await off_loop(message_store().save_messages)(messages)
    members_by_chat = await off_loop(selectors.chat_member_ids)({m.chat_id for m in messages})
    recipients = {user_id for members in members_by_chat.values() for user_id in members}
    devices = await session_registry().lookup(recipients)
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
