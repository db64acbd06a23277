"""Clients that speak the protocol over real sockets."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

PASSWORD = "correct-horse-battery-staple"
REPO = Path(__file__).resolve().parent.parent


def ensure_services() -> None:
    """Start the real servers (idempotent: running ones are left alone)."""
    import pytest

    result = subprocess.run([str(REPO / "scripts/services/services.sh"), "up"], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"the real servers did not start:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


_names = itertools.count()


def unique_name(prefix: str) -> str:
    return f"{prefix}{os.getpid()}x{next(_names)}"


def kafka_records(topic: str, *, expected: int | None = None, timeout_ms: int = 3000) -> list[Any]:
    """A topic's records from its start on the local broker: all of them
    (until none comes for ``timeout_ms``), or the first ``expected``."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=["127.0.0.1:9092"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=timeout_ms,
    )
    try:
        found: list[Any] = []
        for record in consumer:
            found.append(record)
            if len(found) == expected:
                break
        return found
    finally:
        consumer.close()


@dataclass
class LiveServer:
    base_url: str
    log: Path


@dataclass
class FullStack(LiveServer):
    env: dict[str, str]
    ports: list[int]
    topology: Any


@dataclass
class Reply:
    status: int
    body: Any


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.token = token

    def request(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None, token: str | None = None
    ) -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        bearer = token or self.token
        if bearer:
            request.add_header("Authorization", f"Bearer {bearer}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Reply(response.status, json.loads(response.read() or b"null"))
        except urllib.error.HTTPError as error:
            payload = error.read()
            assert error.headers.get("Content-Type", "").startswith("application/json"), payload[:300]
            return Reply(error.code, json.loads(payload))

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    def signup(self, prefix: str = "user") -> ApiClient:
        """A new user; returns a client that carries their token."""
        username = unique_name(prefix)
        reply = self.post("/api/auth/signup", {"username": username, "password": PASSWORD})
        assert reply.status == 201, reply.body
        client = ApiClient(self.base_url, reply.body["token"])
        client.username = username  # type: ignore[attr-defined]
        client.user_id = reply.body["user"]["id"]  # type: ignore[attr-defined]
        return client

    def ws(self) -> ChatSocket:
        ws_url = self.get("/api/servers/assign").body["ws_url"]
        return ChatSocket.open(ws_url, {"Authorization": f"Bearer {self.token}"})


class ChatSocket:
    """A WebSocket that reads frames, setting aside the ones a test is not waiting for."""

    def __init__(self, connection: ClientConnection, stack: ExitStack) -> None:
        self.connection = connection
        self.stack = stack
        self.seen: list[dict[str, Any]] = []

    @classmethod
    def open(cls, ws_url: str, headers: dict[str, str]) -> ChatSocket:
        stack = ExitStack()
        connection = stack.enter_context(connect(ws_url, additional_headers=headers, open_timeout=10))
        return cls(connection, stack)

    def send(self, frame: Any) -> None:
        self.connection.send(frame if isinstance(frame, str) else json.dumps(frame))

    def send_message(self, chat_id: int, body: str, client_msg_id: str | None = None) -> str:
        client_msg_id = client_msg_id or str(uuid.uuid4())
        self.send({"type": "send", "chat_id": chat_id, "client_msg_id": client_msg_id, "body": body})
        return client_msg_id

    def expect(self, frame_type: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        for index, frame in enumerate(self.seen):
            if frame["type"] == frame_type and all(frame.get(k) == v for k, v in fields.items()):
                return self.seen.pop(index)
        while True:
            frame = json.loads(self.connection.recv(timeout=timeout))
            if frame["type"] == frame_type and all(frame.get(k) == v for k, v in fields.items()):
                return frame
            self.seen.append(frame)

    def frames_of(self, frame_type: str, quiet_for: float = 0.5) -> list[dict[str, Any]]:
        """Every frame of a type that arrives until the socket is quiet."""
        try:
            while True:
                self.seen.append(json.loads(self.connection.recv(timeout=quiet_for)))
        except TimeoutError:
            pass
        found = [frame for frame in self.seen if frame["type"] == frame_type]
        self.seen = [frame for frame in self.seen if frame["type"] != frame_type]
        return found

    def close(self) -> None:
        self.stack.close()

    def __enter__(self) -> ChatSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
