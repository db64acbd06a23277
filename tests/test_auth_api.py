"""Sign-up and tokens over the HTTP API."""

from __future__ import annotations

from tests.helpers import PASSWORD, ApiClient, unique_name


def test_signup_returns_a_token_that_authenticates(api: ApiClient) -> None:
    username = unique_name("dora")
    reply = api.post("/api/auth/signup", {"username": username, "password": PASSWORD})
    assert reply.status == 201
    assert reply.body["user"]["username"] == username
    assert isinstance(reply.body["user"]["id"], int)
    assert api.get("/api/chats", token=reply.body["token"]).status == 200


def test_signup_refuses_a_taken_username(api: ApiClient) -> None:
    username = unique_name("dora")
    assert api.post("/api/auth/signup", {"username": username, "password": PASSWORD}).status == 201
    again = api.post("/api/auth/signup", {"username": username, "password": PASSWORD})
    assert again.status == 409
    assert again.body["error"]["code"] == "username_taken"


def test_signup_rejects_bad_input_with_a_clear_error(api: ApiClient) -> None:
    cases = [
        {"username": "", "password": PASSWORD},
        {"username": "has spaces", "password": PASSWORD},
        {"username": unique_name("weak"), "password": "123"},
        {"username": unique_name("nopw")},
        {"username": 5, "password": PASSWORD},
    ]
    for body in cases:
        reply = api.post("/api/auth/signup", body)
        assert reply.status == 400, body
        assert reply.body["error"]["code"] == "bad_request"
        assert reply.body["error"]["message"]
    assert api.post("/api/auth/signup", raw=b"{oops").body["error"]["code"] == "bad_request"
    assert api.post("/api/auth/signup", raw=b"[1, 2]").status == 400


def test_token_for_right_and_wrong_credentials(api: ApiClient) -> None:
    user = api.signup("erin")
    good = api.post("/api/auth/token", {"username": user.username, "password": PASSWORD})  # type: ignore[attr-defined]
    assert good.status == 200
    assert good.body["user"]["username"] == user.username  # type: ignore[attr-defined]
    assert api.get("/api/chats", token=good.body["token"]).status == 200
    bad = api.post("/api/auth/token", {"username": user.username, "password": "wrong"})  # type: ignore[attr-defined]
    assert bad.status == 401
    assert bad.body["error"]["code"] == "not_authenticated"


def test_rest_calls_without_credentials_are_refused(api: ApiClient) -> None:
    for path in ("/api/chats", "/api/chats/1/messages", "/api/servers/assign"):
        reply = api.get(path)
        assert reply.status == 401, path
        assert reply.body["error"]["code"] == "not_authenticated"
    assert api.get("/api/chats", token="forged").status == 401


def test_unknown_endpoints_and_methods_answer_json(api: ApiClient) -> None:
    user = api.signup("fay")
    missing = user.get("/api/nothing-here")
    assert missing.status == 404
    assert missing.body["error"]["code"] == "not_found"
    assert user.request("DELETE", "/api/chats").status == 405


def test_service_discovery_hands_out_a_websocket_url(api: ApiClient) -> None:
    user = api.signup("gus")
    reply = user.get("/api/servers/assign")
    assert reply.status == 200
    assert reply.body["ws_url"].startswith("ws://127.0.0.1:")
    assert reply.body["ws_url"].endswith("/ws/chat/")
