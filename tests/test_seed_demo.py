"""``manage.py seed_demo``: demo users and chats for newcomers."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from messaging.models import Chat

pytestmark = pytest.mark.django_db


def run_seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seed_demo_creates_users_that_can_log_in_and_their_chats() -> None:
    output = run_seed()
    for username in ("alice", "bob", "carol"):
        assert f"{username} / chat-demo-2026" in output
        assert authenticate(username=username, password="chat-demo-2026") is not None
    assert Chat.objects.filter(kind="direct").count() == 1
    group = Chat.objects.get(kind="group")
    assert sorted(group.members.values_list("username", flat=True)) == ["alice", "bob", "carol"]


def test_seed_demo_twice_changes_nothing() -> None:
    run_seed()
    second = run_seed()
    assert "created" not in second
    assert "password unchanged" in second
    assert Chat.objects.count() == 2
