"""Reads. Functions named ``*_for_member`` check membership and raise
``ChatNotFound`` / ``NotMember``; the rest trust their caller."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import TypedDict

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from chatsite.aio import off_loop
from chatsite.recent import Recent
from messaging.backends import message_store
from messaging.errors import ChatNotFound, NotMember
from messaging.models import Chat, Membership
from messaging.types import Message, MessagePayload

_MEMBERSHIP_TABLE = Membership._meta.db_table

# Unread counts stop at this; clients show "999+".
UNREAD_COUNT_CAP = 999


class ChatPayload(TypedDict):
    chat_id: int
    kind: str
    name: str
    members: list[str]


class ChatSummaryPayload(ChatPayload):
    unread: int
    last_message: MessagePayload | None


def chat_payload(chat: Chat) -> ChatPayload:
    usernames = sorted(m.user.username for m in chat.memberships.select_related("user"))
    return {"chat_id": chat.pk, "kind": chat.kind, "name": chat.name, "members": usernames}


def chat_get_for_member(*, user: User, chat_id: int) -> Chat:
    chat = Chat.objects.filter(pk=chat_id).first()
    if chat is None:
        raise ChatNotFound("no such chat")
    if not Membership.objects.filter(chat=chat, user=user).exists():
        raise NotMember("you are not a member of this chat")
    return chat


def is_member(*, user_id: int, chat_id: int) -> bool:
    return Membership.objects.filter(chat_id=chat_id, user_id=user_id).exists()


def chat_member_ids(chat_ids: Iterable[int]) -> dict[int, list[int]]:
    """Each chat's member ids. The dispatcher asks this for every batch, so it
    is one SQL statement rather than a queryset (a third of the cost)."""
    wanted = [int(chat_id) for chat_id in chat_ids]
    members: dict[int, list[int]] = defaultdict(list)
    if not wanted:
        return members
    placeholders = ", ".join(["%s"] * len(wanted))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT chat_id, user_id FROM {_MEMBERSHIP_TABLE} WHERE chat_id IN ({placeholders})", wanted)
        for chat_id, user_id in cursor.fetchall():
            members[chat_id].append(user_id)
    return members


def contact_ids(*, user_id: int) -> dict[int, str]:
    """Everyone who shares a chat with the user, id -> username."""
    chat_ids = Membership.objects.filter(user_id=user_id).values("chat_id")
    rows = (
        Membership.objects.filter(chat_id__in=chat_ids)
        .exclude(user_id=user_id)
        .values_list("user_id", "user__username")
        .distinct()
    )
    return dict(rows)


def chat_list_for_user(*, user: User) -> list[ChatSummaryPayload]:
    memberships = list(
        Membership.objects.filter(user=user).select_related("chat").prefetch_related("chat__memberships__user")
    )
    store = message_store()
    latest = store.latest_messages([m.chat_id for m in memberships])
    summaries: list[ChatSummaryPayload] = []
    for membership in memberships:
        chat = membership.chat
        last = latest.get(chat.pk)
        unread = 0
        if last is not None:
            unread = store.count_after(
                chat_id=chat.pk,
                after=membership.last_read_message_id,
                exclude_sender_id=user.pk,
                cap=UNREAD_COUNT_CAP,
            )
        members = sorted(m.user.username for m in chat.memberships.all())
        summaries.append(
            {
                "chat_id": chat.pk,
                "kind": chat.kind,
                "name": chat.name,
                "members": members,
                "unread": unread,
                "last_message": last.to_payload() if last else None,
            }
        )
    # Most recently active first; chats without messages by creation, newest first.
    summaries.sort(key=lambda summary: _activity_key(summary, latest), reverse=True)
    return summaries


def _activity_key(summary: ChatSummaryPayload, latest: dict[int, Message]) -> tuple[int, int]:
    last = latest.get(summary["chat_id"])
    return (last.message_id.time if last else 0, summary["chat_id"])


async def message_history_for_member(
    *,
    user: User,
    chat_id: int,
    limit: int = settings.CHAT_HISTORY_DEFAULT_LIMIT,
    before: uuid.UUID | None = None,
    after: uuid.UUID | None = None,
) -> list[Message]:
    """A page of the chat's history for one of its members. Awaited on the
    event loop: a reader confirmed recently costs no database call."""
    if not _recent_readers.get((user.pk, chat_id)):
        await off_loop(_check_reader)(user_id=user.pk, chat_id=chat_id)
    return await message_store().ahistory(chat_id=chat_id, limit=limit, before=before, after=after)


# (user_id, chat_id) pairs whose membership was confirmed recently: a reader
# paging through history costs one query per CHAT_MEMBERSHIP_CACHE_SECONDS, not
# one per page. Only members are remembered, so a new member reads at once and a
# removed one is refused within that bound.
_recent_readers: Recent[tuple[int, int], bool] = Recent(
    ttl=lambda: settings.CHAT_MEMBERSHIP_CACHE_SECONDS, size=lambda: settings.CHAT_MEMBERSHIP_CACHE_SIZE
)


def _check_reader(*, user_id: int, chat_id: int) -> None:
    if _recent_readers.get((user_id, chat_id)):
        return
    if not is_member(user_id=user_id, chat_id=chat_id):
        if not Chat.objects.filter(pk=chat_id).exists():
            raise ChatNotFound("no such chat")
        raise NotMember("you are not a member of this chat")
    _recent_readers.put((user_id, chat_id), True)


def readers_forget() -> None:
    """Drop every remembered history reader of this process (tests reuse ids after a flush)."""
    _recent_readers.clear()
