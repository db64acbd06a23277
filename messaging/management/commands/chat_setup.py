"""Create what the real engines need: the Kafka topic and the Cassandra schema
(idempotent; run by `make run-full` and the test suite)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError


class Command(BaseCommand):
    help = "Create the Kafka topic and the Cassandra keyspace and tables (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.create_topic()
        self.create_schema()

    def create_topic(self) -> None:
        topic = settings.CHAT_KAFKA_TOPIC
        try:
            admin = KafkaAdminClient(bootstrap_servers=settings.CHAT_KAFKA_BOOTSTRAP_SERVERS, client_id="chat-setup")
        except KafkaError as exc:
            raise CommandError(f"cannot reach Kafka at {settings.CHAT_KAFKA_BOOTSTRAP_SERVERS}: {exc!r}") from exc
        try:
            admin.create_topics(
                [
                    NewTopic(
                        name=topic,
                        num_partitions=settings.CHAT_KAFKA_PARTITIONS,
                        replication_factor=settings.CHAT_KAFKA_REPLICATION_FACTOR,
                    )
                ]
            )
            self.stdout.write(f"created Kafka topic {topic} ({settings.CHAT_KAFKA_PARTITIONS} partitions)")
        except TopicAlreadyExistsError:
            self.stdout.write(f"Kafka topic {topic} exists")
        finally:
            admin.close()

    def create_schema(self) -> None:
        from messaging.backends.cassandra_store import ensure_schema

        ensure_schema()
        self.stdout.write(f"Cassandra keyspace {settings.CHAT_CASSANDRA_KEYSPACE} ready")
