"""ASGI entry point: HTTP through Django (hot reads by a fast lane), WebSockets to the chat gateway."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_http = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from chatsite.fast_lane import FastLane  # noqa: E402
from chatsite.gc_tuning import tune_for_serving  # noqa: E402
from chatsite.ws_auth import TokenOrSessionAuthMiddleware  # noqa: E402
from messaging.consumers import ChatConsumer  # noqa: E402

websocket_urlpatterns = [path("ws/chat/", ChatConsumer.as_asgi())]

application = ProtocolTypeRouter(
    {
        # The pages' static files are served by the app itself: no separate web server to set up.
        # History pages asked with a bearer token skip the middleware chain (chatsite/fast_lane.py).
        "http": FastLane(ASGIStaticFilesHandler(django_http), handler=django_http),
        "websocket": TokenOrSessionAuthMiddleware(URLRouter(websocket_urlpatterns)),
    }
)

# Start-up is done: what it made lives as long as the process.
tune_for_serving()
