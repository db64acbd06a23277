"""Typed messages and the JSON shapes that carry them.

``Message`` is the domain value that travels gateway -> bus -> dispatcher ->
store; the ``*Frame`` TypedDicts are the protocol's server-to-client frames.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NotRequired, TypedDict

from messaging.ids import message_id_isoformat, message_id_time


class MessagePayload(TypedDict):
    message_id: str
    chat_id: int
    sender: str
    body: str
    client_msg_id: str
    sent_at: str


class MessageFrame(MessagePayload):
    type: Literal["message"]


class AckFrame(TypedDict):
    type: Literal["ack"]
    client_msg_id: str
    message_id: str
    chat_id: int


class ErrorFrame(TypedDict):
    type: Literal["error"]
    code: str
    message: str
    client_msg_id: NotRequired[str]


class TypingFrame(TypedDict):
    type: Literal["typing"]
    chat_id: int
    user: str


class ReadFrame(TypedDict):
    type: Literal["read"]
    chat_id: int
    user: str
    message_id: str


class BusRecord(TypedDict):
    """A message as it travels on the bus (JSON-safe)."""

    message_id: str
    chat_id: int
    sender_id: int
    sender: str
    body: str
    client_msg_id: str


def isoformat_utc(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Message:
    message_id: uuid.UUID
    chat_id: int
    sender_id: int
    sender: str
    body: str
    client_msg_id: str

    @property
    def sent_at(self) -> datetime:
        return message_id_time(self.message_id)

    def to_payload(self) -> MessagePayload:
        return {
            "message_id": str(self.message_id),
            "chat_id": self.chat_id,
            "sender": self.sender,
            "body": self.body,
            "client_msg_id": self.client_msg_id,
            "sent_at": message_id_isoformat(self.message_id),
        }

    def to_frame(self) -> MessageFrame:
        return {"type": "message", **self.to_payload()}

    def to_bus_record(self) -> BusRecord:
        return {
            "message_id": str(self.message_id),
            "chat_id": self.chat_id,
            "sender_id": self.sender_id,
            "sender": self.sender,
            "body": self.body,
            "client_msg_id": self.client_msg_id,
        }

    @classmethod
    def from_bus_record(cls, record: BusRecord) -> Message:
        return cls(
            message_id=uuid.UUID(record["message_id"]),
            chat_id=int(record["chat_id"]),
            sender_id=int(record["sender_id"]),
            sender=record["sender"],
            body=record["body"],
            client_msg_id=record["client_msg_id"],
        )
