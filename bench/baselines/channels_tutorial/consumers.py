"""The tutorial's room consumer, speaking the harness's frames.

The one addition to the tutorial's design is the ``ack`` to the sender once
``group_send`` has returned (the layer has the message), so flooding senders
can keep a window of unacknowledged messages as they do against the project.
"""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer


class RoomConsumer(AsyncWebsocketConsumer):
    group: str

    async def connect(self) -> None:
        self.group = f"room_{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame = json.loads(text_data or "")
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind == "send":
            client_msg_id = frame.get("client_msg_id")
            event = {"type": "room.message", "client_msg_id": client_msg_id, "body": frame.get("body")}
            await self.channel_layer.group_send(self.group, event)
            await self.send(text_data=json.dumps({"type": "ack", "client_msg_id": client_msg_id}))
        elif kind == "typing":
            await self.channel_layer.group_send(self.group, {"type": "room.typing", "from": self.channel_name})

    async def room_message(self, event: dict[str, Any]) -> None:
        frame = {"type": "message", "client_msg_id": event["client_msg_id"], "body": event["body"]}
        await self.send(text_data=json.dumps(frame))

    async def room_typing(self, event: dict[str, Any]) -> None:
        if event["from"] != self.channel_name:
            await self.send(text_data=json.dumps({"type": "typing"}))
