"""Run one chat server: daphne serving the whole protocol, announcing itself
in the server directory with a heartbeat so service discovery can hand it out."""

from __future__ import annotations

import logging
import threading
from typing import Any

from daphne.server import Server, twisted_loop
from django.conf import settings
from django.core.management.base import BaseCommand

from chatsite.event_loop import loop_kind
from messaging.backends import warm_up_backends_in_background
from presence.local import LocalConnections

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve the chat protocol on one port and register this server for service discovery."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--public-ws-url", default="", help="ws_url clients should use (default: from host/port)")

    def handle(self, *args: Any, **options: Any) -> None:
        from chatsite.asgi import application

        ws_url = options["public_ws_url"] or f"ws://{options['host']}:{options['port']}/ws/chat/"
        # The store and the bus connect while daphne starts listening, not
        # during the first send or history page.
        warm_up_backends_in_background()
        stop = threading.Event()
        heartbeat = None
        if settings.CHAT_MODE == "full":
            heartbeat = threading.Thread(
                target=_heartbeat_loop, args=(settings.CHAT_SERVER_ID, ws_url, stop), daemon=True
            )
            heartbeat.start()
        self.stdout.write(
            f"chat server {settings.CHAT_SERVER_ID} serving {ws_url}"
            f" ({settings.CHAT_MODE} mode, event loop: {loop_kind(twisted_loop)})"
        )
        try:
            Server(
                application=application,
                endpoints=[f"tcp:port={options['port']}:interface={options['host']}"],
                websocket_handshake_timeout=10,
            ).run()
        finally:
            stop.set()
            if heartbeat is not None:
                heartbeat.join(5)
                from presence.redis_registry import server_deregister

                server_deregister(server_id=settings.CHAT_SERVER_ID)


def _heartbeat_loop(server_id: str, ws_url: str, stop: threading.Event) -> None:
    from presence.redis_registry import server_heartbeat

    while not stop.is_set():
        try:
            server_heartbeat(server_id=server_id, ws_url=ws_url, connections=LocalConnections.count())
        except Exception:
            # Redis down: this server drops out of discovery until it is back,
            # while the connections it holds keep working.
            logger.exception("server heartbeat failed")
        stop.wait(settings.CHAT_SERVER_HEARTBEAT_SECONDS)
