"""Run the full pipeline in the foreground: two chat servers, two Kafka
dispatcher workers and one notification worker, their output interleaved
with name prefixes. Ctrl-C stops them all. The real servers must be up
(`make run-full` starts them first)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chatsite.topology import Topology, full_topology, wait_for_consumer_group


class Command(BaseCommand):
    help = "Run two chat servers, two dispatchers and a notification worker on the real engines."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000, help="first chat server port (the second is +1)")
        parser.add_argument("--chat-servers", type=int, default=2)
        parser.add_argument("--dispatchers", type=int, default=2)

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.CHAT_MODE != "full":
            raise CommandError("run_full needs CHAT_MODE=full (make run-full sets it)")
        specs = full_topology(
            host=options["host"],
            port=options["port"],
            chat_servers=options["chat_servers"],
            dispatchers=options["dispatchers"],
        )
        topology = Topology(specs, env={}, log_dir=Path(settings.VAR_DIR) / "run-full", echo=sys.stdout)
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        topology.start()
        try:
            topology.wait_for_ports()
            self.stdout.write("==> waiting for the dispatchers to join the consumer group")
            wait_for_consumer_group(
                bootstrap_servers=settings.CHAT_KAFKA_BOOTSTRAP_SERVERS,
                group=settings.CHAT_KAFKA_GROUP,
                members=options["dispatchers"],
            )
            ports = [spec.port for spec in specs if spec.port is not None]
            self.stdout.write(
                self.style.SUCCESS(
                    f"==> full pipeline up: open http://{options['host']}:{ports[0]}/ "
                    f"(chat servers on ports {', '.join(map(str, ports))}; logs in {topology.log_dir}); Ctrl-C stops"
                )
            )
            while not stopping.wait(1.0):
                topology.check_alive()
        except KeyboardInterrupt:
            pass
        finally:
            self.stdout.write("==> stopping the pipeline")
            topology.stop()
