"""The message store of the embedded default: the Django database."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import IntegrityError, transaction

from messaging.ids import message_sort_key
from messaging.models import ClientMessageClaim, StoredMessage
from messaging.types import Message


def _to_message(row: StoredMessage) -> Message:
    return Message(
        message_id=row.message_id,
        chat_id=row.chat_id,
        sender_id=row.sender_id,
        sender=row.sender_username,
        body=row.body,
        client_msg_id=row.client_msg_id,
    )


class OrmMessageStore:
    def claim_client_msg_id(
        self, *, sender_id: int, client_msg_id: str, chat_id: int, message_id: uuid.UUID
    ) -> tuple[uuid.UUID, int]:
        try:
            with transaction.atomic():
                ClientMessageClaim.objects.create(
                    sender_id=sender_id, client_msg_id=client_msg_id, chat_id=chat_id, message_id=message_id
                )
        except IntegrityError:
            claim = ClientMessageClaim.objects.get(sender_id=sender_id, client_msg_id=client_msg_id)
            return claim.message_id, claim.chat_id
        return message_id, chat_id

    def save_messages(self, messages: Sequence[Message]) -> None:
        rows = [
            StoredMessage(
                message_id=message.message_id,
                chat_id=message.chat_id,
                sender_id=message.sender_id,
                sender_username=message.sender,
                body=message.body,
                client_msg_id=message.client_msg_id,
                sort_key=message_sort_key(message.message_id),
                sent_at=message.sent_at,
            )
            for message in messages
        ]
        StoredMessage.objects.bulk_create(rows, ignore_conflicts=True)

    def get_message(self, *, chat_id: int, message_id: uuid.UUID) -> Message | None:
        row = StoredMessage.objects.filter(chat_id=chat_id, message_id=message_id).first()
        return _to_message(row) if row else None

    def history(
        self,
        *,
        chat_id: int,
        limit: int,
        before: uuid.UUID | None = None,
        after: uuid.UUID | None = None,
    ) -> list[Message]:
        rows = StoredMessage.objects.filter(chat_id=chat_id)
        if before is not None:
            rows = rows.filter(sort_key__lt=message_sort_key(before))
        if after is not None:
            rows = rows.filter(sort_key__gt=message_sort_key(after))
        if after is not None and before is None:
            oldest_first = list(rows.order_by("sort_key")[:limit])
            return [_to_message(row) for row in reversed(oldest_first)]
        return [_to_message(row) for row in rows.order_by("-sort_key")[:limit]]

    def latest_messages(self, chat_ids: Sequence[int]) -> dict[int, Message]:
        latest: dict[int, Message] = {}
        for chat_id in chat_ids:
            row = StoredMessage.objects.filter(chat_id=chat_id).order_by("-sort_key").first()
            if row is not None:
                latest[chat_id] = _to_message(row)
        return latest

    def count_after(self, *, chat_id: int, after: uuid.UUID | None, exclude_sender_id: int, cap: int) -> int:
        rows = StoredMessage.objects.filter(chat_id=chat_id).exclude(sender_id=exclude_sender_id)
        if after is not None:
            rows = rows.filter(sort_key__gt=message_sort_key(after))
        return len(rows.values_list("pk", flat=True)[:cap])
