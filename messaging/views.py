from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from chatsite.api import api_view, async_api_view, json_response, parse_json_body, request_user
from messaging import selectors, services
from messaging.errors import BadRequest, ChatError
from messaging.ids import parse_message_id


def _string_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"{field} must be a list of usernames")
    return value


@api_view(methods={"GET", "POST"})
def api_chats(request: HttpRequest) -> HttpResponse:
    user = request_user(request)
    if request.method == "GET":
        return json_response({"chats": selectors.chat_list_for_user(user=user)})
    data = parse_json_body(request)
    kind = data.get("kind")
    members = _string_list(data.get("members"), "members")
    if kind == "direct":
        if len(members) != 1:
            raise BadRequest("a direct chat has exactly one other member")
        chat, created = services.chat_create_direct(creator=user, other_username=members[0])
        return json_response(selectors.chat_payload(chat), status=201 if created else 200)
    if kind == "group":
        name = data.get("name")
        if not isinstance(name, str):
            raise BadRequest("a group chat needs a name (a string)")
        chat = services.chat_create_group(creator=user, name=name, member_usernames=members)
        return json_response(selectors.chat_payload(chat), status=201)
    raise BadRequest("kind must be 'direct' or 'group'")


def _message_id_param(request: HttpRequest, name: str) -> uuid.UUID | None:
    raw = request.GET.get(name)
    if raw is None:
        return None
    parsed = parse_message_id(raw)
    if parsed is None:
        raise BadRequest(f"{name} must be a message_id (a timeuuid)")
    return parsed


def _limit_param(request: HttpRequest) -> int:
    raw = request.GET.get("limit")
    if raw is None:
        return settings.CHAT_HISTORY_DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= settings.CHAT_HISTORY_MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {settings.CHAT_HISTORY_MAX_LIMIT}")
    return int(raw)


@async_api_view(methods={"GET"})
async def api_chat_messages(request: HttpRequest, chat_id: int) -> HttpResponse:
    messages = await selectors.message_history_for_member(
        user=request_user(request),
        chat_id=chat_id,
        limit=_limit_param(request),
        before=_message_id_param(request, "before"),
        after=_message_id_param(request, "after"),
    )
    return json_response({"messages": [message.to_payload() for message in messages]})


def _page_user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


@login_required
def chat_list_page(request: HttpRequest) -> HttpResponse:
    return render(request, "messaging/chat_list.html", {"max_body": settings.CHAT_MAX_BODY_CHARS})


@login_required
def chat_page(request: HttpRequest, chat_id: int) -> HttpResponse:
    try:
        chat = selectors.chat_get_for_member(user=_page_user(request), chat_id=chat_id)
    except ChatError as exc:
        raise Http404("no such chat") from exc
    payload = selectors.chat_payload(chat)
    return render(
        request,
        "messaging/chat.html",
        {"chat": payload, "max_body": settings.CHAT_MAX_BODY_CHARS},
    )
