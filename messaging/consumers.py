"""The chat gateway: one consumer per WebSocket connection.

A switchboard: parse the frame, call a service, answer with an ``ack`` or an
``error`` frame. Channel-layer events carry frames already serialised.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.models import User

from messaging import services
from messaging.delivery import encode_frame, ensure_inbox_reader
from messaging.errors import BadRequest, ChatError, RateLimited
from messaging.ids import parse_message_id
from messaging.ratelimit import TokenBucket
from messaging.types import AckFrame, ErrorFrame
from presence.local import connection_closed, connection_opened
from presence.registry import Connection
from presence.services import presence_connect, presence_disconnect, presence_heartbeat

logger = logging.getLogger(__name__)

Frame = dict[str, Any]


def _field(frame: Frame, name: str, kind: type) -> Any:
    value = frame.get(name)
    # bool is an int in Python, never a valid chat id.
    if not isinstance(value, kind) or isinstance(value, bool):
        if name not in frame:
            raise BadRequest(f"missing field {name!r}")
        raise BadRequest(f"field {name!r} must be {'an integer' if kind is int else 'a string'}")
    return value


class ChatConsumer(AsyncWebsocketConsumer):
    # No channel per connection: frames arrive through the chat server's inbox
    # (messaging.delivery), which saves a layer subscription per socket.
    channel_layer_alias = "no-per-connection-channel"

    user: User
    connection: Connection | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections before every handler, a
        # hop to its one database thread per frame (a twentieth of a flood's
        # CPU). This consumer never uses the database on that thread: its
        # services run queries through chatsite.aio.off_loop, which does the
        # same housekeeping on the thread that queries.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # before accept: the handshake is refused with HTTP 403
            return
        self.user = user
        self.send_bucket = TokenBucket(rate=settings.CHAT_SEND_RATE_PER_SECOND, burst=settings.CHAT_SEND_BURST)
        self.sends_in_flight: set[asyncio.Task[None]] = set()
        self.handlers: dict[str, Callable[[Frame], Awaitable[None]]] = {
            "send": self.handle_send,
            "heartbeat": self.handle_heartbeat,
            "typing": self.handle_typing,
            "read": self.handle_read,
        }
        device_id = uuid.uuid4().hex
        self.connection = Connection(user_id=user.pk, server_id=settings.CHAT_SERVER_ID, device_id=device_id)
        # Registered before the handshake completes: whatever is dispatched
        # from now on is either delivered live or already stored when the
        # client's catch-up (sent once it sees the socket open) reads history.
        presence_snapshot = await presence_connect(user=user, connection=self.connection)
        await self.accept()
        connection_opened(device_id, self)
        ensure_inbox_reader()
        for frame in presence_snapshot:
            await self.send(text_data=encode_frame(frame))

    async def disconnect(self, code: int) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            connection_closed(connection.device_id)
            await presence_disconnect(user=self.user, connection=connection)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else bytes_data
        client_msg_id: str | None = None
        try:
            if raw is None or len(raw) > settings.CHAT_MAX_FRAME_BYTES:
                raise BadRequest(f"a frame must be JSON text of at most {settings.CHAT_MAX_FRAME_BYTES} bytes")
            try:
                frame = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise BadRequest("the frame is not valid JSON") from exc
            if not isinstance(frame, dict):
                raise BadRequest("a frame must be a JSON object")
            if isinstance(frame.get("client_msg_id"), str):
                client_msg_id = frame["client_msg_id"]
            handler = self.handlers.get(frame.get("type"))  # type: ignore[arg-type]
            if handler is None:
                raise BadRequest(f"unknown frame type {frame.get('type')!r}")
            await handler(frame)
        except ChatError as error:
            await self.send_error(error, client_msg_id)
        except Exception:
            logger.exception("frame from user %s failed", self.user.pk)
            await self.send_error(ChatError("the server could not handle this frame"), client_msg_id)

    async def send_error(self, error: ChatError, client_msg_id: str | None) -> None:
        frame: ErrorFrame = {"type": "error", "code": error.code, "message": error.message}
        if client_msg_id is not None:
            frame["client_msg_id"] = client_msg_id
        await self.send(text_data=encode_frame(frame))

    async def handle_send(self, frame: Frame) -> None:
        chat_id = _field(frame, "chat_id", int)
        client_msg_id = _field(frame, "client_msg_id", str)
        body = _field(frame, "body", str)
        if not self.send_bucket.allow():
            raise RateLimited("too many messages; slow down and retry with the same client_msg_id")
        # Sends of one connection overlap: each waits milliseconds on the store
        # and the bus, and a client with several messages in flight should not
        # pay those waits one after another. Past the limit, the connection
        # stops reading frames until one finishes (backpressure).
        while len(self.sends_in_flight) >= settings.CHAT_MAX_SENDS_IN_FLIGHT:
            await asyncio.wait(self.sends_in_flight, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self.send_and_ack(chat_id=chat_id, client_msg_id=client_msg_id, body=body))
        self.sends_in_flight.add(task)
        task.add_done_callback(self.sends_in_flight.discard)

    async def send_and_ack(self, *, chat_id: int, client_msg_id: str, body: str) -> None:
        try:
            message = await services.message_send(
                sender=self.user, chat_id=chat_id, client_msg_id=client_msg_id, body=body
            )
        except ChatError as error:
            await self.send_error(error, client_msg_id)
            return
        except Exception:
            logger.exception("send from user %s failed", self.user.pk)
            await self.send_error(ChatError("the server could not handle this frame"), client_msg_id)
            return
        ack: AckFrame = {
            "type": "ack",
            "client_msg_id": client_msg_id,
            "message_id": str(message.message_id),
            "chat_id": chat_id,
        }
        await self.send(text_data=encode_frame(ack))

    async def handle_heartbeat(self, frame: Frame) -> None:
        if self.connection is not None:
            await presence_heartbeat(connection=self.connection)

    async def handle_typing(self, frame: Frame) -> None:
        await services.chat_typing(user=self.user, chat_id=_field(frame, "chat_id", int))

    async def handle_read(self, frame: Frame) -> None:
        chat_id = _field(frame, "chat_id", int)
        message_id = parse_message_id(_field(frame, "message_id", str))
        if message_id is None:
            raise BadRequest("message_id must be a timeuuid")
        await services.chat_read_mark(user=self.user, chat_id=chat_id, message_id=message_id)
