"""The Django admin: users, chats with their members, message moderation."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from messaging.models import Chat, Membership
from messaging.services import chat_create_group

pytestmark = pytest.mark.django_db


def test_admin_lists_chats_escaped_and_shows_membership(admin_client: Client) -> None:
    alice = User.objects.create_user("alice", password="x-irrelevant-x")
    User.objects.create_user("bob", password="x-irrelevant-x")
    dave = User.objects.create_user("dave", password="x-irrelevant-x")
    chat = chat_create_group(creator=alice, name="Ops <script>", member_usernames=["bob"])
    listing = admin_client.get("/admin/messaging/chat/")
    assert listing.status_code == 200
    assert b"Ops &lt;script&gt;" in listing.content
    page = admin_client.get(f"/admin/messaging/chat/{chat.pk}/change/")
    assert page.status_code == 200
    Membership.objects.create(chat=chat, user=dave)
    assert set(Chat.objects.get(pk=chat.pk).members.values_list("username", flat=True)) == {"alice", "bob", "dave"}
    for path in ("/admin/auth/user/", "/admin/messaging/storedmessage/", "/admin/accounts/apitoken/"):
        assert admin_client.get(path).status_code == 200, path


def test_admin_needs_staff() -> None:
    User.objects.create_user("mallory", password="x-irrelevant-x")
    client = Client()
    client.login(username="mallory", password="x-irrelevant-x")
    assert client.get("/admin/messaging/chat/").status_code == 302
