from django.contrib import admin

from messaging.models import Chat, Membership, StoredMessage


class MembershipInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]
    readonly_fields = ["joined_at", "last_read_message_id"]


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["id", "kind", "name", "member_count", "created_by", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name", "memberships__user__username"]
    readonly_fields = ["direct_key", "created_at"]
    inlines = [MembershipInline]

    @admin.display(description="members")
    def member_count(self, chat: Chat) -> int:
        return chat.memberships.count()


@admin.register(StoredMessage)
class StoredMessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Moderation of the embedded store's history: find and remove messages."""

    list_display = ["sent_at", "chat", "sender_username", "body"]
    list_filter = ["chat__kind"]
    search_fields = ["body", "sender_username"]
    readonly_fields = ["message_id", "chat", "sender", "sender_username", "client_msg_id", "sort_key", "sent_at"]
    ordering = ["-sort_key"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        # New messages only enter through the message path.
        return False
