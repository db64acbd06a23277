"""Celery tasks: thin interfaces over services."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from messaging.services import notification_record


# The database may be briefly away (failover, restart): retry with backoff.
# Other database errors (a user deleted meanwhile) would fail again: no retry.
@shared_task(  # type: ignore[untyped-decorator]
    name="messaging.push_notify",
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=5,
)
def push_notify(*, user_ids: list[int], chat_id: int, message_id: str, sender: str, preview: str) -> int:
    return notification_record(
        user_ids=user_ids, chat_id=chat_id, message_id=message_id, sender=sender, preview=preview
    )
