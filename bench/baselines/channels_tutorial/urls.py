"""No HTTP pages: the baseline only serves WebSockets."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
