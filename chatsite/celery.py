"""The Celery app. Dispatcher workers host the Kafka consumer through a
worker bootstep, switched on with ``celery worker --kafka-dispatcher``;
other workers (push notifications) run plain tasks."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_ready
from click import Option

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

app = Celery("chatsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.user_options["worker"].add(
    Option(["--kafka-dispatcher"], is_flag=True, default=False, help="Host the Kafka dispatcher consumer.")
)


class KafkaDispatcherStep(bootsteps.StartStopStep):
    """Owns the dispatcher thread: started with the worker, stopped and joined with it."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, kafka_dispatcher: bool = False, **options: Any) -> None:
        self.enabled = kafka_dispatcher
        self.dispatcher: Any = None

    def start(self, worker: Any) -> None:
        from messaging.kafka_dispatcher import KafkaDispatcher

        self.dispatcher = KafkaDispatcher()
        self.dispatcher.start()

    def stop(self, worker: Any) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()

    def info(self, worker: Any) -> dict[str, Any]:
        return {"kafka_dispatcher": self.dispatcher.info() if self.dispatcher else None}


app.steps["worker"].add(KafkaDispatcherStep)


def _tune_gc_once_ready(**kwargs: Any) -> None:
    from chatsite.gc_tuning import tune_for_serving

    tune_for_serving()


worker_ready.connect(_tune_gc_once_ready)
