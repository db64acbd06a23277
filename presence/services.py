"""Presence: a user is online while any of their devices is connected."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal, TypedDict

from django.contrib.auth.models import User

from chatsite.aio import off_loop
from messaging import selectors
from messaging.delivery import connections_of, deliver_frame, deliver_to_users
from messaging.types import isoformat_utc
from presence.backends import session_registry
from presence.registry import Connection


class PresenceFrame(TypedDict):
    type: Literal["presence"]
    user: str
    status: Literal["online", "offline"]
    last_seen: str | None


def _presence_frame(username: str, *, online: bool, last_seen: float | None) -> PresenceFrame:
    return {
        "type": "presence",
        "user": username,
        "status": "online" if online else "offline",
        "last_seen": isoformat_utc(datetime.fromtimestamp(last_seen, UTC)) if last_seen is not None else None,
    }


async def presence_connect(*, user: User, connection: Connection) -> list[PresenceFrame]:
    """Register a device. The first device brings the user online for their
    contacts; the answer is the contacts' presence for the new device."""
    registry = session_registry()
    device_count = await registry.register(connection)
    contacts = await off_loop(selectors.contact_ids)(user_id=user.pk)
    # One lookup serves both: the contacts to tell and the snapshot's statuses.
    online = await registry.lookup(contacts)
    if device_count == 1:
        frame = _presence_frame(user.username, online=True, last_seen=time.time())
        await deliver_frame(connections_of(online), frame=frame)
    last_seen = await registry.last_seen(contacts)
    return [
        _presence_frame(username, online=user_id in online, last_seen=last_seen.get(user_id))
        for user_id, username in sorted(contacts.items(), key=lambda item: item[1])
    ]


async def presence_disconnect(*, user: User, connection: Connection) -> None:
    remaining = await session_registry().unregister(connection)
    if remaining == 0:
        contacts = await off_loop(selectors.contact_ids)(user_id=user.pk)
        await deliver_to_users(contacts, frame=_presence_frame(user.username, online=False, last_seen=time.time()))


async def presence_heartbeat(*, connection: Connection) -> None:
    await session_registry().touch(connection)
