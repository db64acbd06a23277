"""Writes. Every change a client sees goes through here, and only these
functions publish events to devices."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from chatsite.aio import off_loop
from chatsite.recent import Recent
from messaging import selectors
from messaging.backends import claim_registry, message_bus, message_store
from messaging.backends.base import Claim
from messaging.delivery import deliver_to_users
from messaging.errors import BadRequest, NotMember, TooLarge, Unavailable, UserNotFound
from messaging.ids import message_sort_key, new_message_id
from messaging.models import Chat, Membership, PushNotification
from messaging.types import Message, ReadFrame, TypingFrame

CLIENT_MSG_ID_MAX_CHARS = 100


# (user_id, chat_id) pairs checked recently, so a chatty connection does not
# query the database for every frame. Only members are remembered: a new
# member is admitted at once, a removed one is refused within the TTL.
_memberships: Recent[tuple[int, int], bool] = Recent(
    ttl=lambda: settings.CHAT_MEMBERSHIP_CACHE_SECONDS, size=lambda: settings.CHAT_MEMBERSHIP_CACHE_SIZE
)


def memberships_forget() -> None:
    """Drop every cached membership of this process (tests reuse ids after a flush)."""
    _memberships.clear()


async def _check_member(*, user_id: int, chat_id: int) -> None:
    if _memberships.get((user_id, chat_id)):
        return
    if not await off_loop(selectors.is_member)(user_id=user_id, chat_id=chat_id):
        raise NotMember("you are not a member of this chat")
    _memberships.put((user_id, chat_id), True)


def _users_by_username(usernames: Sequence[str]) -> list[User]:
    wanted = set(usernames)
    found = list(User.objects.filter(username__in=wanted, is_active=True))
    missing = wanted - {user.username for user in found}
    if missing:
        raise UserNotFound(f"no such user: {', '.join(sorted(missing))}")
    return found


def chat_create_direct(*, creator: User, other_username: str) -> tuple[Chat, bool]:
    """The direct chat of the pair, made if new; the flag says whether it was."""
    if other_username == creator.username:
        raise BadRequest("a direct chat needs another user")
    (other,) = _users_by_username([other_username])
    low, high = sorted((creator.pk, other.pk))
    direct_key = f"{low}:{high}"
    existing = Chat.objects.filter(direct_key=direct_key).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            chat = Chat.objects.create(kind=Chat.Kind.DIRECT, direct_key=direct_key, created_by=creator)
            Membership.objects.bulk_create([Membership(chat=chat, user=creator), Membership(chat=chat, user=other)])
    except IntegrityError:
        # Both users opened the chat at once; the other request made it.
        return Chat.objects.get(direct_key=direct_key), False
    return chat, True


def chat_create_group(*, creator: User, name: str, member_usernames: Sequence[str]) -> Chat:
    name = name.strip()
    if not name:
        raise BadRequest("a group chat needs a name")
    if len(name) > settings.CHAT_MAX_CHAT_NAME_CHARS:
        raise BadRequest(f"the name is longer than {settings.CHAT_MAX_CHAT_NAME_CHARS} characters")
    others = [username for username in dict.fromkeys(member_usernames) if username != creator.username]
    if len(others) + 1 > settings.CHAT_MAX_GROUP_MEMBERS:
        raise BadRequest(f"a group has at most {settings.CHAT_MAX_GROUP_MEMBERS} members")
    members = [creator, *_users_by_username(others)]
    with transaction.atomic():
        chat = Chat.objects.create(kind=Chat.Kind.GROUP, name=name, created_by=creator)
        Membership.objects.bulk_create([Membership(chat=chat, user=user) for user in members])
    return chat


def _check_body(body: str) -> None:
    if not body.strip():
        raise BadRequest("the message body is empty")
    if len(body) > settings.CHAT_MAX_BODY_CHARS:
        raise TooLarge(f"the message body is longer than {settings.CHAT_MAX_BODY_CHARS} characters")


def _check_client_msg_id(client_msg_id: str) -> None:
    if not client_msg_id or len(client_msg_id) > CLIENT_MSG_ID_MAX_CHARS:
        raise BadRequest(f"client_msg_id must be 1 to {CLIENT_MSG_ID_MAX_CHARS} characters")


async def message_send(*, sender: User, chat_id: int, client_msg_id: str, body: str) -> Message:
    """Accept a message: once this returns, the bus has it.

    The same (sender, client_msg_id) always yields the same message_id; a
    retry of a message already stored publishes nothing.
    """
    _check_body(body)
    _check_client_msg_id(client_msg_id)
    await _check_member(user_id=sender.pk, chat_id=chat_id)
    bound = await _bind_client_msg_id(sender_id=sender.pk, client_msg_id=client_msg_id, chat_id=chat_id)
    if bound.chat_id != chat_id:
        raise BadRequest("client_msg_id was already used for a message to another chat")
    message = Message(
        message_id=bound.message_id,
        chat_id=chat_id,
        sender_id=sender.pk,
        sender=sender.username,
        body=body,
        client_msg_id=client_msg_id,
    )
    if bound.fresh:
        await message_bus().publish(message)
        return message
    # A retry. If the first attempt reached the store, ack it again without a
    # second publish; otherwise that publish may have failed: publish again
    # (the same id, so the store keeps one copy).
    stored: Message | None = await off_loop(message_store().get_message)(chat_id=chat_id, message_id=bound.message_id)
    if stored is not None:
        return stored
    await message_bus().publish(message)
    return message


class _Binding(NamedTuple):
    message_id: uuid.UUID
    chat_id: int
    fresh: bool


async def _bind_client_msg_id(*, sender_id: int, client_msg_id: str, chat_id: int) -> _Binding:
    """The message id (and chat) a send's (sender, client_msg_id) is bound to.

    The store holds every binding of a stored message for good; the claim
    registry holds the recent ones, including those still on their way to the
    store, and decides races between concurrent attempts. Both are asked at
    once: a send pays one round trip, not two.
    """
    fresh = Claim(message_id=new_message_id(), chat_id=chat_id)
    durable, registered = await asyncio.gather(
        message_store().find_claim(sender_id=sender_id, client_msg_id=client_msg_id),
        claim_registry().claim(sender_id=sender_id, client_msg_id=client_msg_id, claim=fresh),
        return_exceptions=True,
    )
    if isinstance(durable, BaseException) or isinstance(registered, BaseException):
        failure = durable if isinstance(durable, BaseException) else registered
        assert isinstance(failure, BaseException)
        raise Unavailable("the message store is unavailable; retry with the same client_msg_id") from failure
    if durable is not None:
        return _Binding(durable.message_id, durable.chat_id, fresh=False)
    if registered is not None:
        return _Binding(registered.message_id, registered.chat_id, fresh=False)
    return _Binding(fresh.message_id, fresh.chat_id, fresh=True)


def _advance_read_marker(*, user_id: int, chat_id: int, message_id: uuid.UUID) -> bool:
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(chat_id=chat_id, user_id=user_id)
        current = membership.last_read_message_id
        if current is not None and message_sort_key(current) >= message_sort_key(message_id):
            return False
        membership.last_read_message_id = message_id
        membership.save(update_fields=["last_read_message_id"])
        return True


async def chat_read_mark(*, user: User, chat_id: int, message_id: uuid.UUID) -> None:
    """Move the user's read marker forward and tell the chat's devices."""
    await _check_member(user_id=user.pk, chat_id=chat_id)
    stored = await off_loop(message_store().get_message)(chat_id=chat_id, message_id=message_id)
    if stored is None:
        raise BadRequest("no such message in this chat")
    moved = await off_loop(_advance_read_marker)(user_id=user.pk, chat_id=chat_id, message_id=message_id)
    if not moved:
        return
    frame: ReadFrame = {"type": "read", "chat_id": chat_id, "user": user.username, "message_id": str(message_id)}
    await _deliver_to_chat(chat_id, frame=frame)


async def chat_typing(*, user: User, chat_id: int) -> None:
    """Tell the other members' devices that the user is typing."""
    await _check_member(user_id=user.pk, chat_id=chat_id)
    frame: TypingFrame = {"type": "typing", "chat_id": chat_id, "user": user.username}
    await _deliver_to_chat(chat_id, frame=frame, skip_user_id=user.pk)


async def _deliver_to_chat(chat_id: int, *, frame: ReadFrame | TypingFrame, skip_user_id: int | None = None) -> None:
    members = await off_loop(selectors.chat_member_ids)([chat_id])
    await deliver_to_users([user_id for user_id in members.get(chat_id, []) if user_id != skip_user_id], frame=frame)


NOTIFICATION_PREVIEW_CHARS = 200


def notification_record(*, user_ids: list[int], chat_id: int, message_id: str, sender: str, preview: str) -> int:
    """Record push notifications for offline members; a replay records nothing new."""
    rows = [
        PushNotification(
            user_id=user_id,
            chat_id=chat_id,
            message_id=uuid.UUID(message_id),
            sender=sender,
            preview=preview[:NOTIFICATION_PREVIEW_CHARS],
        )
        for user_id in user_ids
    ]
    return len(PushNotification.objects.bulk_create(rows, ignore_conflicts=True))
