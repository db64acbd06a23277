"""The chat gateway driven in-process through channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import override_settings

from accounts.services import token_issue
from chatsite.asgi import application
from messaging.backends import claim_registry, message_bus, orm_store, reset_backends
from messaging.backends.base import Claim
from messaging.backends.claims import InProcessClaimRegistry
from messaging.backends.inprocess_bus import InProcessMessageBus
from messaging.backends.orm_store import OrmMessageStore
from messaging.selectors import message_history_for_member
from messaging.services import chat_create_direct, chat_create_group, memberships_forget

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def make_user(name: str) -> tuple[User, str]:
    user = User.objects.create_user(username=name, password="x-irrelevant-x")
    return user, token_issue(user=user)


async def connect(token: str | None, headers: list[tuple[bytes, bytes]] | None = None) -> WebsocketCommunicator:
    all_headers = list(headers or [])
    if token:
        all_headers.append((b"authorization", f"Bearer {token}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=all_headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def next_of(communicator: WebsocketCommunicator, frame_type: str, timeout: float = 5) -> dict[str, Any]:
    while True:
        frame = json.loads(await communicator.receive_from(timeout=timeout))
        if frame["type"] == frame_type:
            return frame


async def frame_types_until_quiet(communicator: WebsocketCommunicator) -> list[str]:
    types = []
    while not await communicator.receive_nothing(timeout=0.3):
        types.append(json.loads(await communicator.receive_from())["type"])
    return types


async def test_unauthenticated_handshake_is_refused() -> None:
    communicator = WebsocketCommunicator(application, "/ws/chat/")
    connected, _ = await communicator.connect()
    assert not connected


async def test_send_is_acked_and_delivered_to_both_sides() -> None:
    (alice, alice_token), (_bob, bob_token) = await make_user("alice"), await make_user("bob")
    chat, _ = await database_sync_to_async(chat_create_direct)(creator=alice, other_username="bob")
    alice_ws, bob_ws = await connect(alice_token), await connect(bob_token)
    await alice_ws.send_json_to({"type": "send", "chat_id": chat.pk, "client_msg_id": "c1", "body": "<b>hi</b>"})
    ack = await next_of(alice_ws, "ack")
    assert ack == {"type": "ack", "client_msg_id": "c1", "message_id": ack["message_id"], "chat_id": chat.pk}
    delivered = await next_of(bob_ws, "message")
    assert delivered["message_id"] == ack["message_id"]
    assert delivered["body"] == "<b>hi</b>"
    assert (await next_of(alice_ws, "message"))["message_id"] == ack["message_id"]
    await alice_ws.disconnect()
    await bob_ws.disconnect()


async def test_typing_reaches_the_other_members_only() -> None:
    (alice, alice_token), (_bob, bob_token) = await make_user("alice"), await make_user("bob")
    _, carol_token = await make_user("carol")
    chat = await database_sync_to_async(chat_create_group)(creator=alice, name="g", member_usernames=["bob", "carol"])
    alice_ws, bob_ws, carol_ws = await connect(alice_token), await connect(bob_token), await connect(carol_token)
    await alice_ws.send_json_to({"type": "typing", "chat_id": chat.pk})
    assert await next_of(bob_ws, "typing") == {"type": "typing", "chat_id": chat.pk, "user": "alice"}
    assert await next_of(carol_ws, "typing") == {"type": "typing", "chat_id": chat.pk, "user": "alice"}
    await alice_ws.send_json_to({"type": "heartbeat"})
    assert "typing" not in await frame_types_until_quiet(alice_ws)  # not echoed to the typist
    for ws in (alice_ws, bob_ws, carol_ws):
        await ws.disconnect()


async def test_read_receipt_is_relayed_and_moves_only_forward() -> None:
    (alice, alice_token), (_bob, bob_token) = await make_user("alice"), await make_user("bob")
    chat, _ = await database_sync_to_async(chat_create_direct)(creator=alice, other_username="bob")
    alice_ws, bob_ws = await connect(alice_token), await connect(bob_token)
    ids = []
    for n in range(2):
        await alice_ws.send_json_to({"type": "send", "chat_id": chat.pk, "client_msg_id": f"r{n}", "body": "x"})
        ids.append((await next_of(alice_ws, "ack"))["message_id"])
    await message_bus().drain()  # type: ignore[attr-defined]
    await bob_ws.send_json_to({"type": "read", "chat_id": chat.pk, "message_id": ids[1]})
    receipt = await next_of(alice_ws, "read")
    assert receipt == {"type": "read", "chat_id": chat.pk, "user": "bob", "message_id": ids[1]}
    # Reading an older message does not move the marker back, and tells nobody.
    await bob_ws.send_json_to({"type": "read", "chat_id": chat.pk, "message_id": ids[0]})
    await bob_ws.send_json_to({"type": "read", "chat_id": chat.pk, "message_id": str(uuid.uuid1())})
    assert (await next_of(bob_ws, "error"))["code"] == "bad_request"
    assert "read" not in await frame_types_until_quiet(alice_ws)
    await alice_ws.disconnect()
    await bob_ws.disconnect()


async def test_presence_goes_online_and_offline_for_contacts() -> None:
    (alice, alice_token), (_bob, bob_token) = await make_user("alice"), await make_user("bob")
    await database_sync_to_async(chat_create_direct)(creator=alice, other_username="bob")
    alice_ws = await connect(alice_token)
    snapshot = await next_of(alice_ws, "presence")
    assert snapshot["user"] == "bob"
    assert snapshot["status"] == "offline"
    bob_ws = await connect(bob_token)
    online = await next_of(alice_ws, "presence")
    assert (online["user"], online["status"]) == ("bob", "online")
    bob_second = await connect(bob_token)  # a second device changes nothing for alice
    await bob_second.disconnect()
    await bob_ws.disconnect()
    offline = await next_of(alice_ws, "presence")
    assert (offline["user"], offline["status"]) == ("bob", "offline")
    assert offline["last_seen"].endswith("Z")
    await alice_ws.disconnect()


@override_settings(CHAT_MEMBERSHIP_CACHE_SECONDS=0.3)
async def test_a_removed_member_is_refused_once_the_membership_cache_expires() -> None:
    (alice, alice_token), _ = await make_user("alice"), await make_user("bob")
    chat = await database_sync_to_async(chat_create_group)(creator=alice, name="g", member_usernames=["bob"])
    ws = await connect(alice_token)
    await ws.send_json_to({"type": "send", "chat_id": chat.pk, "client_msg_id": "in", "body": "hi"})
    assert (await next_of(ws, "ack"))["client_msg_id"] == "in"
    from messaging.models import Membership

    await database_sync_to_async(Membership.objects.filter(chat=chat, user=alice).delete)()
    await asyncio.sleep(0.4)
    await ws.send_json_to({"type": "send", "chat_id": chat.pk, "client_msg_id": "out", "body": "hi?"})
    refused = await next_of(ws, "error")
    assert (refused["code"], refused["client_msg_id"]) == ("not_member", "out")
    await ws.disconnect()


@override_settings(CHAT_SEND_RATE_PER_SECOND=0.001, CHAT_SEND_BURST=2)
async def test_a_flooding_connection_is_rate_limited() -> None:
    (alice, alice_token), _ = await make_user("alice"), await make_user("bob")
    chat, _ = await database_sync_to_async(chat_create_direct)(creator=alice, other_username="bob")
    ws = await connect(alice_token)
    for n in range(3):
        await ws.send_json_to({"type": "send", "chat_id": chat.pk, "client_msg_id": f"f{n}", "body": "spam"})
    answers: dict[str, str] = {}
    while len(answers) < 3:  # acks come as each send completes, so in any order
        frame = json.loads(await ws.receive_from(timeout=5))
        if frame["type"] in {"ack", "error"}:
            answers[frame["client_msg_id"]] = frame.get("code", frame["type"])
    assert answers == {"f0": "ack", "f1": "ack", "f2": "rate_limited"}
    await ws.disconnect()


async def test_malformed_frames_are_refused_one_by_one() -> None:
    (alice, alice_token), _ = await make_user("alice"), await make_user("bob")
    chat, _ = await database_sync_to_async(chat_create_direct)(creator=alice, other_username="bob")
    ws = await connect(alice_token)
    bad_frames: list[Any] = [
        "[]",
        '"just a string"',
        {"type": "dance"},
        {"chat_id": chat.pk},
        {"type": "send", "chat_id": chat.pk, "body": "no id"},
        {"type": "send", "chat_id": True, "client_msg_id": "b", "body": "x"},
        {"type": "send", "chat_id": chat.pk, "client_msg_id": "c", "body": 5},
        {"type": "send", "chat_id": chat.pk, "client_msg_id": "d", "body": "   "},
        {"type": "send", "chat_id": chat.pk, "client_msg_id": "", "body": "x"},
        {"type": "read", "chat_id": chat.pk, "message_id": "not-a-uuid"},
        {"type": "typing"},
    ]
    for frame in bad_frames:
        await ws.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))
        error = await next_of(ws, "error")
        assert error["code"] == "bad_request", frame
    await ws.send_to(text_data="x" * 70_000)
    assert (await next_of(ws, "error"))["code"] == "bad_request"
    await message_bus().drain()  # type: ignore[attr-defined]
    from messaging.models import ClientMessageClaim, StoredMessage

    assert await database_sync_to_async(StoredMessage.objects.count)() == 0
    assert await database_sync_to_async(ClientMessageClaim.objects.count)() == 0
    await ws.disconnect()


async def test_browser_session_cookie_needs_our_own_origin() -> None:
    alice, _ = await make_user("alice")
    from django.test import Client

    client = Client()
    await database_sync_to_async(client.force_login)(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    ours = await connect(None, headers=[(b"cookie", cookie), (b"origin", b"http://localhost:8000")])
    await ours.disconnect()
    foreign = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"cookie", cookie), (b"origin", b"http://evil.example")]
    )
    connected, _ = await foreign.connect()
    assert not connected


async def test_copies_of_one_send_in_flight_and_a_late_retry_make_one_message() -> None:
    (alice, alice_token), _ = await make_user("alice"), await make_user("bob")
    chat, _ = await database_sync_to_async(chat_create_direct)(creator=alice, other_username="bob")
    first, second = await connect(alice_token), await connect(alice_token)
    frame = {"type": "send", "chat_id": chat.pk, "client_msg_id": "same", "body": "once"}
    for _ in range(4):
        await first.send_json_to(frame)
        await second.send_json_to(frame)
    acks = [await next_of(ws, "ack") for ws in (first, second) for _ in range(4)]
    assert len({ack["message_id"] for ack in acks}) == 1
    await message_bus().drain()  # type: ignore[attr-defined]

    # A restart empties the in-memory claim registry; the stored binding answers.
    registry = claim_registry()
    assert isinstance(registry, InProcessClaimRegistry)
    registry.clear()
    await first.send_json_to(frame)
    assert (await next_of(first, "ack"))["message_id"] == acks[0]["message_id"]
    await message_bus().drain()  # type: ignore[attr-defined]
    history = await message_history_for_member(user=alice, chat_id=chat.pk)
    assert [message.message_id for message in history] == [uuid.UUID(acks[0]["message_id"])]
    await first.disconnect()
    await second.disconnect()


@pytest.mark.parametrize("loop_reader", ["opens", "cannot open"])
async def test_a_late_retrys_binding_is_read_by_the_event_loop_or_else_by_the_pool(
    loop_reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool_lookups: list[str] = []
    pool_lookup = OrmMessageStore._find_claim

    def counted(self: OrmMessageStore, *, sender_id: int, client_msg_id: str) -> Claim | None:
        pool_lookups.append(client_msg_id)
        return pool_lookup(self, sender_id=sender_id, client_msg_id=client_msg_id)

    def cannot_open(path: str) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(OrmMessageStore, "_find_claim", counted)
    if loop_reader == "cannot open":
        monkeypatch.setattr(orm_store, "open_loop_reader", cannot_open)
    (alice, alice_token), _ = await make_user("alice"), await make_user("bob")
    chat, _ = await database_sync_to_async(chat_create_direct)(creator=alice, other_username="bob")
    ws = await connect(alice_token)
    frame = {"type": "send", "chat_id": chat.pk, "client_msg_id": "late", "body": "once"}
    await ws.send_json_to(frame)
    first_ack = await next_of(ws, "ack")
    await message_bus().drain()  # type: ignore[attr-defined]
    claim_registry().clear()  # type: ignore[attr-defined]
    await ws.send_json_to(frame)
    assert (await next_of(ws, "ack"))["message_id"] == first_ack["message_id"]
    # Both sends asked the store; the pool answered only when the loop could not.
    assert pool_lookups == ([] if loop_reader == "opens" else ["late", "late"])
    await ws.disconnect()


@override_settings(
    CHAT_BACKENDS={
        **settings.CHAT_BACKENDS,
        "claim_registry": "messaging.backends.claims.RedisClaimRegistry",
    },
    # Nothing listens on port 1: the claim registry is down.
    CHAT_REDIS_URL="redis://127.0.0.1:1/0",
    CHAT_REDIS_TIMEOUT_SECONDS=1.0,
)
async def test_a_send_whose_claim_registry_is_down_is_refused_as_unavailable_and_stores_nothing() -> None:
    reset_backends()
    (alice, alice_token), _ = await make_user("alice"), await make_user("bob")
    chat, _ = await database_sync_to_async(chat_create_direct)(creator=alice, other_username="bob")
    ws = await connect(alice_token)
    await ws.send_json_to({"type": "send", "chat_id": chat.pk, "client_msg_id": "r1", "body": "anyone?"})
    error = await next_of(ws, "error")
    assert (error["code"], error["client_msg_id"]) == ("unavailable", "r1")
    await message_bus().drain()  # type: ignore[attr-defined]
    from messaging.models import StoredMessage

    assert await database_sync_to_async(StoredMessage.objects.count)() == 0
    await ws.disconnect()


@pytest.fixture(autouse=True)
def fresh_backends() -> Any:
    reset_backends()
    memberships_forget()
    yield
    reset_backends()


@pytest.fixture(autouse=True)
async def settled_dispatch(fresh_backends: None) -> Any:
    """Let the in-process dispatcher finish before the test database is flushed."""
    yield
    bus = message_bus()
    if isinstance(bus, InProcessMessageBus):
        await bus.drain()


# Everything in-process but the message bus: Kafka, reached or not.
KAFKA_BUS_BACKENDS = {
    "message_store": "messaging.backends.orm_store.OrmMessageStore",
    "message_bus": "messaging.backends.kafka_bus.KafkaMessageBus",
    "claim_registry": "messaging.backends.claims.InProcessClaimRegistry",
    "session_registry": "presence.registry.InProcessSessionRegistry",
    "server_directory": "presence.directory.SingleServerDirectory",
}


async def _assert_nothing_stored() -> None:
    from messaging.models import ClientMessageClaim, StoredMessage

    assert await database_sync_to_async(StoredMessage.objects.count)() == 0
    assert await database_sync_to_async(ClientMessageClaim.objects.count)() == 0


@override_settings(
    CHAT_BACKENDS=KAFKA_BUS_BACKENDS,
    # Nothing listens on port 1: the bus is down.
    CHAT_KAFKA_BOOTSTRAP_SERVERS=["127.0.0.1:1"],
    CHAT_KAFKA_MAX_BLOCK_MS=500,
    CHAT_KAFKA_BOOTSTRAP_TIMEOUT_MS=1000,
    CHAT_KAFKA_PUBLISH_TIMEOUT_SECONDS=2.0,
)
async def test_a_send_the_bus_cannot_take_is_refused_as_unavailable_and_stores_nothing() -> None:
    reset_backends()
    (alice, alice_token), _ = await make_user("alice"), await make_user("bob")
    chat, _ = await database_sync_to_async(chat_create_direct)(creator=alice, other_username="bob")
    ws = await connect(alice_token)
    await ws.send_json_to({"type": "send", "chat_id": chat.pk, "client_msg_id": "k1", "body": "anyone?"})
    error = await next_of(ws, "error", timeout=15)
    assert (error["code"], error["client_msg_id"]) == ("unavailable", "k1")
    await _assert_nothing_stored()
    await ws.disconnect()
    message_bus().close()  # type: ignore[attr-defined]


async def _longest_loop_stall(until: asyncio.Future[Any], tick: float = 0.02) -> float:
    """The longest gap between ticks of this event loop until ``until`` is done."""
    loop = asyncio.get_running_loop()
    longest = 0.0
    last = loop.time()
    while not until.done():
        await asyncio.sleep(tick)
        now = loop.time()
        longest = max(longest, now - last - tick)
        last = now
    return longest


@override_settings(
    CHAT_BACKENDS=KAFKA_BUS_BACKENDS,
    # The broker is up, but it has no such topic (and creates none on demand).
    CHAT_KAFKA_BOOTSTRAP_SERVERS=["127.0.0.1:9092"],
    CHAT_KAFKA_TOPIC=f"no_such_topic_{uuid.uuid4().hex[:8]}",
    CHAT_KAFKA_MAX_BLOCK_MS=2000,
    CHAT_KAFKA_PUBLISH_TIMEOUT_SECONDS=4.0,
)
async def test_a_bus_without_its_topic_refuses_sends_without_stalling_the_event_loop() -> None:
    reset_backends()
    (alice, alice_token), _ = await make_user("alice"), await make_user("bob")
    chat, _ = await database_sync_to_async(chat_create_direct)(creator=alice, other_username="bob")
    ws = await connect(alice_token)
    answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    stall = asyncio.create_task(_longest_loop_stall(answered))
    await ws.send_json_to({"type": "send", "chat_id": chat.pk, "client_msg_id": "t1", "body": "hello?"})
    error = await next_of(ws, "error", timeout=15)
    answered.set_result(None)
    assert (error["code"], error["client_msg_id"]) == ("unavailable", "t1")
    # kafka-python waits up to CHAT_KAFKA_MAX_BLOCK_MS (2 s) for the topic's
    # metadata; that wait must not hold the loop every connection shares.
    assert await stall < 1.0
    await _assert_nothing_stored()
    await ws.disconnect()
    message_bus().close()  # type: ignore[attr-defined]
