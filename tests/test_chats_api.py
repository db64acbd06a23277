"""Chats, the chat list and history over the HTTP API."""

from __future__ import annotations

from tests.helpers import ApiClient


def test_direct_chat_is_made_once_per_pair(api: ApiClient) -> None:
    alice, bob = api.signup("alice"), api.signup("bob")
    first = alice.post("/api/chats", {"kind": "direct", "members": [bob.username]})  # type: ignore[attr-defined]
    assert first.status == 201
    assert first.body["kind"] == "direct"
    assert sorted(first.body["members"]) == sorted([alice.username, bob.username])  # type: ignore[attr-defined]
    # Either side asking again gets the same chat.
    again = bob.post("/api/chats", {"kind": "direct", "members": [alice.username]})  # type: ignore[attr-defined]
    assert again.status == 200
    assert again.body["chat_id"] == first.body["chat_id"]


def test_group_chat_includes_the_creator(api: ApiClient) -> None:
    alice, bob, carol = api.signup("alice"), api.signup("bob"), api.signup("carol")
    reply = alice.post("/api/chats", {"kind": "group", "name": "Plans", "members": [bob.username, carol.username]})  # type: ignore[attr-defined]
    assert reply.status == 201
    assert reply.body["name"] == "Plans"
    assert set(reply.body["members"]) == {alice.username, bob.username, carol.username}  # type: ignore[attr-defined]
    listed = carol.get("/api/chats").body["chats"]
    assert [c["chat_id"] for c in listed] == [reply.body["chat_id"]]


def test_chat_creation_rejects_bad_input(api: ApiClient) -> None:
    alice, bob = api.signup("alice"), api.signup("bob")
    cases = [
        {"kind": "direct", "members": ["no-such-user-anywhere"]},
        {"kind": "direct", "members": [alice.username]},  # type: ignore[attr-defined]
        {"kind": "direct", "members": [bob.username, "x"]},  # type: ignore[attr-defined]
        {"kind": "group", "members": [bob.username]},  # type: ignore[attr-defined]
        {"kind": "group", "name": "  ", "members": []},
        {"kind": "group", "name": "x" * 101, "members": []},
        {"kind": "circle", "members": []},
        {"kind": "direct", "members": "bob"},
    ]
    for body in cases:
        reply = alice.post("/api/chats", body)
        assert reply.status == 400, body
        assert reply.body["error"]["message"]
    assert alice.get("/api/chats").body["chats"] == []


def test_chat_list_shows_last_message_and_unread_count(api: ApiClient) -> None:
    alice, bob = api.signup("alice"), api.signup("bob")
    chat_id = alice.post("/api/chats", {"kind": "direct", "members": [bob.username]}).body["chat_id"]  # type: ignore[attr-defined]
    (empty,) = bob.get("/api/chats").body["chats"]
    assert empty["unread"] == 0
    assert empty["last_message"] is None
    with alice.ws() as ws:
        acks = []
        for n in range(3):
            cid = ws.send_message(chat_id, f"note {n}")
            acks.append(ws.expect("ack", client_msg_id=cid)["message_id"])
        ws.expect("message", message_id=acks[-1])
    (summary,) = bob.get("/api/chats").body["chats"]
    assert summary["unread"] == 3
    assert summary["last_message"]["body"] == "note 2"
    assert alice.get("/api/chats").body["chats"][0]["unread"] == 0  # own messages are not unread
    with bob.ws() as ws:
        ws.send({"type": "read", "chat_id": chat_id, "message_id": acks[0]})
        assert ws.frames_of("error") == []
    assert bob.get("/api/chats").body["chats"][0]["unread"] == 2


def test_history_pages_backwards_with_before(api: ApiClient) -> None:
    alice, bob = api.signup("alice"), api.signup("bob")
    chat_id = alice.post("/api/chats", {"kind": "direct", "members": [bob.username]}).body["chat_id"]  # type: ignore[attr-defined]
    sent = []
    with alice.ws() as ws:
        for n in range(7):
            cid = ws.send_message(chat_id, f"m{n}")
            sent.append(ws.expect("ack", client_msg_id=cid)["message_id"])
        ws.expect("message", message_id=sent[-1])
    newest_first = list(reversed(sent))
    page1 = bob.get(f"/api/chats/{chat_id}/messages?limit=3").body["messages"]
    page2 = bob.get(f"/api/chats/{chat_id}/messages?limit=3&before={page1[-1]['message_id']}").body["messages"]
    page3 = bob.get(f"/api/chats/{chat_id}/messages?limit=3&before={page2[-1]['message_id']}").body["messages"]
    assert [m["message_id"] for m in page1 + page2 + page3] == newest_first
    assert [m["body"] for m in page3] == ["m0"]
    window = bob.get(f"/api/chats/{chat_id}/messages?after={sent[1]}&before={sent[5]}").body["messages"]
    assert [m["body"] for m in window] == ["m4", "m3", "m2"]


def test_history_rejects_bad_parameters(api: ApiClient) -> None:
    alice, bob = api.signup("alice"), api.signup("bob")
    chat_id = alice.post("/api/chats", {"kind": "direct", "members": [bob.username]}).body["chat_id"]  # type: ignore[attr-defined]
    for query in (
        "limit=0",
        "limit=201",
        "limit=ten",
        "before=nope",
        "after=123",
        "before=6ba7b810-9dad-41d1-80b4-00c04fd430c8",
    ):  # a version 4 UUID is not a timeuuid
        reply = alice.get(f"/api/chats/{chat_id}/messages?{query}")
        assert reply.status == 400, query
        assert reply.body["error"]["code"] == "bad_request"
    assert alice.get(f"/api/chats/{chat_id}/messages?limit=200").status == 200
