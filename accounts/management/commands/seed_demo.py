"""Create demo users and chats so a newcomer can try the product at once."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand

from messaging.models import Chat
from messaging.services import chat_create_direct, chat_create_group

DEMO_USERS = ["alice", "bob", "carol"]
DEMO_PASSWORD = "chat-demo-2026"
DEMO_GROUP = "Demo team"


class Command(BaseCommand):
    help = "Create the demo users alice, bob and carol with a direct chat and a group (idempotent)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--password", default=DEMO_PASSWORD, help="password of new demo users")

    def handle(self, *args: Any, **options: Any) -> None:
        users: dict[str, User] = {}
        existing: set[str] = set()
        for username in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(options["password"])
                user.save()
                self.stdout.write(f"created user {username}")
            else:
                existing.add(username)
            users[username] = user
        chat_create_direct(creator=users["alice"], other_username="bob")
        if not Chat.objects.filter(kind=Chat.Kind.GROUP, name=DEMO_GROUP).exists():
            chat_create_group(creator=users["alice"], name=DEMO_GROUP, member_usernames=["bob", "carol"])
            self.stdout.write(f"created group chat {DEMO_GROUP!r}")
        self.stdout.write(self.style.SUCCESS("Demo logins (username / password):"))
        for username in DEMO_USERS:
            note = "  (existed already: password unchanged)" if username in existing else ""
            self.stdout.write(f"  {username} / {options['password']}{note}")
