"""Chats and membership live in the Django database in every mode.

``StoredMessage`` and ``ClientMessageClaim`` back the ORM message store of the
embedded default; with the real engines the history lives in Cassandra.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Chat(models.Model):
    class Kind(models.TextChoices):
        DIRECT = "direct", "Direct"
        GROUP = "group", "Group"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=settings.CHAT_MAX_CHAT_NAME_CHARS, blank=True)
    # "<smaller user id>:<larger user id>" for direct chats, so a pair has one chat.
    direct_key = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(  # type: ignore[var-annotated]
        settings.AUTH_USER_MODEL, through="Membership", related_name="chats"
    )

    def __str__(self) -> str:
        return f"{self.get_kind_display()} chat {self.pk}" + (f" {self.name!r}" if self.name else "")


class Membership(models.Model):
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    joined_at = models.DateTimeField(auto_now_add=True)
    # The newest message this member has read (a timeuuid), for unread counts.
    last_read_message_id = models.UUIDField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["chat", "user"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.chat}"


class StoredMessage(models.Model):
    message_id = models.UUIDField(primary_key=True)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages")
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    sender_username = models.CharField(max_length=150)
    body = models.TextField()
    client_msg_id = models.CharField(max_length=100)
    # Orders like Cassandra's timeuuid; see messaging.ids.message_sort_key.
    sort_key = models.CharField(max_length=31, editable=False)
    sent_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["chat", "sort_key"], name="message_history")]
        verbose_name = "message"

    def __str__(self) -> str:
        return f"{self.sender_username} in chat {self.chat_id}: {self.body[:40]}"


class ClientMessageClaim(models.Model):
    """(sender, client_msg_id) -> message_id: what makes sends idempotent."""

    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    client_msg_id = models.CharField(max_length=100)
    chat_id = models.BigIntegerField()
    message_id = models.UUIDField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sender", "client_msg_id"], name="one_message_per_client_id")]


class PushNotification(models.Model):
    """A push notification owed to an offline member (recorded; no push provider yet)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    chat_id = models.BigIntegerField()
    message_id = models.UUIDField()
    sender = models.CharField(max_length=150)
    preview = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "message_id"], name="one_notification_per_message")]
