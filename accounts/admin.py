from django.contrib import admin

from accounts.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "created_at", "last_used_at"]
    search_fields = ["user__username"]
    readonly_fields = ["user", "digest", "created_at", "last_used_at"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        # Tokens are issued through the API only: their plain text is shown once.
        return False
