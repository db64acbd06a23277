"""The history endpoint in process: session and bearer auth, and how long
remembered tokens and memberships may outlive a change."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.contrib.auth.models import User
from django.test import AsyncClient, override_settings

from accounts.models import ApiToken
from accounts.selectors import tokens_forget
from accounts.services import token_issue
from messaging.backends import message_store
from messaging.ids import message_id_isoformat, new_message_id, timeuuid_for_time, timeuuid_from_parts
from messaging.models import Membership
from messaging.selectors import readers_forget
from messaging.services import chat_create_group
from messaging.types import Message, isoformat_utc

pytestmark = pytest.mark.django_db(transaction=True)

SHORT = 0.3


@dataclass
class Reader:
    user: User
    token: str
    chat_id: int
    bodies: list[str]


@pytest.fixture(autouse=True)
def _forget_between_tests() -> Iterator[None]:
    # Ids are reused after each test's flush; remembered answers must not be.
    tokens_forget()
    readers_forget()
    yield
    tokens_forget()
    readers_forget()


def _chat_with_history(count: int = 3) -> Reader:
    alice = User.objects.create_user("alice", password="pw-alice-123456")
    bob = User.objects.create_user("bob", password="pw-bob-123456")
    chat = chat_create_group(creator=alice, name="g", member_usernames=["bob"])
    bodies = [f"m{n}" for n in range(count)]
    message_store().save_messages(
        [
            Message(
                message_id=new_message_id(),
                chat_id=chat.pk,
                sender_id=alice.pk,
                sender=alice.username,
                body=body,
                client_msg_id=f"c{n}",
            )
            for n, body in enumerate(bodies)
        ]
    )
    return Reader(user=bob, token=token_issue(user=bob), chat_id=chat.pk, bodies=bodies)


async def _get(client: AsyncClient, path: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.get(path, headers=headers)
    return response.status_code, response.json()


async def test_history_is_served_to_a_bearer_token_and_to_a_logged_in_browser() -> None:
    reader = await sync_to_async(_chat_with_history)()
    path = f"/api/chats/{reader.chat_id}/messages?limit=2"
    status, body = await _get(AsyncClient(), path, reader.token)
    assert status == 200
    assert [m["body"] for m in body["messages"]] == ["m2", "m1"]

    browser = AsyncClient()
    await browser.aforce_login(reader.user)
    status, body = await _get(browser, path)
    assert status == 200
    assert [m["body"] for m in body["messages"]] == ["m2", "m1"]

    status, body = await _get(AsyncClient(), path)
    assert (status, body["error"]["code"]) == (401, "not_authenticated")
    status, body = await _get(AsyncClient(), path, "not-a-token")
    assert (status, body["error"]["code"]) == (401, "not_authenticated")
    status, body = await _get(AsyncClient(), "/api/chats/999999/messages", reader.token)
    assert (status, body["error"]["code"]) == (404, "not_found")
    response = await AsyncClient().post(path, headers={"Authorization": f"Bearer {reader.token}"})
    assert response.status_code == 405


@override_settings(CHAT_AUTH_CACHE_SECONDS=SHORT)
async def test_a_deactivated_user_is_refused_once_the_token_cache_expires() -> None:
    reader = await sync_to_async(_chat_with_history)()
    path = f"/api/chats/{reader.chat_id}/messages"
    assert (await _get(AsyncClient(), path, reader.token))[0] == 200
    await User.objects.filter(pk=reader.user.pk).aupdate(is_active=False)
    await asyncio.sleep(SHORT + 0.1)
    status, body = await _get(AsyncClient(), path, reader.token)
    assert (status, body["error"]["code"]) == (401, "not_authenticated")


@override_settings(CHAT_AUTH_CACHE_SECONDS=SHORT)
async def test_a_deleted_token_is_refused_once_the_token_cache_expires() -> None:
    reader = await sync_to_async(_chat_with_history)()
    path = f"/api/chats/{reader.chat_id}/messages"
    assert (await _get(AsyncClient(), path, reader.token))[0] == 200
    await ApiToken.objects.filter(user=reader.user).adelete()
    await asyncio.sleep(SHORT + 0.1)
    assert (await _get(AsyncClient(), path, reader.token))[0] == 401


@override_settings(CHAT_MEMBERSHIP_CACHE_SECONDS=SHORT)
async def test_a_removed_member_stops_reading_history_once_the_membership_cache_expires() -> None:
    reader = await sync_to_async(_chat_with_history)()
    path = f"/api/chats/{reader.chat_id}/messages"
    assert (await _get(AsyncClient(), path, reader.token))[0] == 200
    await Membership.objects.filter(chat_id=reader.chat_id, user=reader.user).adelete()
    await asyncio.sleep(SHORT + 0.1)
    status, body = await _get(AsyncClient(), path, reader.token)
    assert (status, body["error"]["code"]) == (403, "not_member")


@override_settings(CHAT_AUTH_CACHE_SECONDS=0, CHAT_MEMBERSHIP_CACHE_SECONDS=0)
async def test_with_the_caches_off_a_change_applies_to_the_next_request() -> None:
    reader = await sync_to_async(_chat_with_history)()
    path = f"/api/chats/{reader.chat_id}/messages"
    assert (await _get(AsyncClient(), path, reader.token))[0] == 200
    await Membership.objects.filter(chat_id=reader.chat_id, user=reader.user).adelete()
    assert (await _get(AsyncClient(), path, reader.token))[0] == 403
    await User.objects.filter(pk=reader.user.pk).aupdate(is_active=False)
    assert (await _get(AsyncClient(), path, reader.token))[0] == 401


async def _through_asgi(
    app: Any, path: str, *, token: str | None, method: str = "GET", host: str = "testserver"
) -> tuple[int, dict[str, str], Any]:
    headers = [(b"host", host.encode())]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    communicator = HttpCommunicator(app, method, path, headers=headers)
    response = await communicator.get_response(timeout=10)
    answer_headers = {bytes(k).decode().lower(): bytes(v).decode() for k, v in response["headers"]}
    return response["status"], answer_headers, orjson.loads(response["body"]) if response["body"] else None


async def test_the_fast_lane_answers_bearer_history_reads_exactly_as_django_does() -> None:
    from chatsite.asgi import application

    reader = await sync_to_async(_chat_with_history)()
    outsider = await sync_to_async(User.objects.create_user)("carol", password="pw-carol-123456")
    outsider_token = await sync_to_async(token_issue)(user=outsider)
    newest = await sync_to_async(message_store().history)(chat_id=reader.chat_id, limit=1)
    cases = [
        (f"/api/chats/{reader.chat_id}/messages?limit=2", reader.token),
        (f"/api/chats/{reader.chat_id}/messages?before={newest[0].message_id}", reader.token),
        (f"/api/chats/{reader.chat_id}/messages?limit=0", reader.token),
        (f"/api/chats/{reader.chat_id}/messages?after=not-an-id", reader.token),
        (f"/api/chats/{reader.chat_id}/messages", "not-a-token"),
        (f"/api/chats/{reader.chat_id}/messages", outsider_token),
        ("/api/chats/999999/messages", reader.token),
    ]
    statuses = []
    for path, token in cases:
        status, headers, body = await _through_asgi(application, path, token=token)
        django = await AsyncClient().get(path, headers={"Authorization": f"Bearer {token}"})
        assert (status, body) == (django.status_code, django.json()), path
        assert headers["content-type"] == "application/json"
        for name in ("x-content-type-options", "x-frame-options", "referrer-policy", "cross-origin-opener-policy"):
            assert headers[name] == django.headers[name], (path, name)
        statuses.append(status)
    assert statuses == [200, 200, 400, 400, 401, 403, 404]

    status, _, body = await _through_asgi(
        application, f"/api/chats/{reader.chat_id}/messages", token=reader.token, host="evil.example"
    )
    assert (status, body["error"]["code"]) == (400, "bad_request")


async def test_only_bearer_history_reads_take_the_fast_lane() -> None:
    from chatsite.asgi import django_http
    from chatsite.fast_lane import FastLane

    reader = await sync_to_async(_chat_with_history)()
    reached_django: list[str] = []

    async def django_stand_in(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached_django.append(f"{scope['method']} {scope['path']} {scope['query_string'].decode()}".strip())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    lane = FastLane(django_stand_in, handler=django_http)
    path = f"/api/chats/{reader.chat_id}/messages"
    status, _, body = await _through_asgi(lane, path + "?limit=1", token=reader.token)
    assert status == 200 and [m["body"] for m in body["messages"]] == ["m2"]
    assert reached_django == []

    await _through_asgi(lane, path, token=None)  # the session cookie path
    await _through_asgi(lane, path, token=reader.token, method="POST")
    await _through_asgi(lane, "/api/chats", token=reader.token)
    await _through_asgi(lane, path + "/", token=reader.token)
    assert reached_django == [f"GET {path}", f"POST {path}", "GET /api/chats", f"GET {path}/"]


async def test_sent_at_is_the_message_ids_time_to_the_microsecond_in_utc() -> None:
    reader = await sync_to_async(_chat_with_history)(0)
    moments = [
        datetime(2026, 11, 28, 0, 0, 0, 0, tzinfo=UTC),  # a whole second: still six digits
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 2, 28, 12, 30, 1, 5, tzinfo=UTC),
    ]
    stored = [
        Message(
            message_id=timeuuid_from_parts(timeuuid_for_time(moment).time + 7, 1, 2),  # 700 ns past: truncated
            chat_id=reader.chat_id,
            sender_id=reader.user.pk,
            sender=reader.user.username,
            body=f"at {moment}",
            client_msg_id=f"t{n}",
        )
        for n, moment in enumerate(moments)
    ]
    await sync_to_async(message_store().save_messages)(stored)
    status, body = await _get(AsyncClient(), f"/api/chats/{reader.chat_id}/messages?limit=10", reader.token)
    assert status == 200
    assert {m["body"]: m["sent_at"] for m in body["messages"]} == {
        f"at {moment}": isoformat_utc(moment) for moment in moments
    }


def test_the_fast_sent_at_matches_datetime_formatting_across_the_calendar() -> None:
    picker = random.Random(20261128)
    for _ in range(20_000):
        # Anywhere from 1583 to 5138 (a timeuuid ends in 5236), a whole second now and then.
        seconds = picker.randrange(-12_000_000_000, 100_000_000_000)
        micros = 0 if picker.random() < 0.1 else picker.randrange(1_000_000)
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=micros)
        message_id = timeuuid_from_parts(timeuuid_for_time(moment).time + picker.randrange(10), 0, 0)
        assert message_id_isoformat(message_id) == isoformat_utc(moment)
    # Each side of midnight, before and after 1970, and the turn of a leap day.
    for text in ("1969-12-31T23:59:59.999999", "1970-01-01T00:00:00", "1583-01-01T00:00:00", "2024-02-29T23:59:59.5"):
        moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
        assert message_id_isoformat(timeuuid_for_time(moment)) == isoformat_utc(moment)
