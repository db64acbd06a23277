"""The full pipeline on the real engines, checked through its artefacts:
WebSocket -> Kafka -> Celery dispatcher -> Cassandra -> Redis lookup -> the
other chat server -> WebSocket."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import orjson
import psycopg
import pytest
import redis
from cassandra.cluster import Cluster, Session
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from chatsite.topology import wait_for_consumer_group
from tests.helpers import ApiClient, ChatSocket, FullStack, kafka_records

T = TypeVar("T")


@pytest.fixture(scope="module")
def cassandra(full_stack: FullStack) -> Iterator[Session]:
    cluster = Cluster(["127.0.0.1"], port=9042)
    session = cluster.connect(full_stack.env["CHAT_CASSANDRA_KEYSPACE"])
    yield session
    cluster.shutdown()


@pytest.fixture
def full_api(full_stack: FullStack) -> ApiClient:
    return ApiClient(full_stack.base_url)


def socket_on(client: ApiClient, port: int) -> ChatSocket:
    """Connect to one particular chat server, bypassing service discovery."""
    return ChatSocket.open(f"ws://127.0.0.1:{port}/ws/chat/", {"Authorization": f"Bearer {client.token}"})


def server_id(port: int) -> str:
    return f"{socket.gethostname()}-chat-{port}"


def direct_chat(owner: ApiClient, other: ApiClient) -> int:
    reply = owner.post("/api/chats", {"kind": "direct", "members": [other.username]})  # type: ignore[attr-defined]
    return int(reply.body["chat_id"])


def eventually(probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout}s")
        time.sleep(0.2)


def bucket_of(message_id: str, bucket_seconds: int) -> int:
    timestamp_100ns = uuid.UUID(message_id).time - 0x01B21DD213814000
    return timestamp_100ns // 10_000_000 // bucket_seconds


def test_message_crosses_servers_through_kafka_cassandra_and_redis(
    full_stack: FullStack, full_api: ApiClient, cassandra: Session
) -> None:
    alice, bob = full_api.signup("alice"), full_api.signup("bob")
    chat_id = direct_chat(alice, bob)
    server_a, server_b = full_stack.ports
    registry = redis.Redis.from_url(full_stack.env["CHAT_REDIS_URL"], decode_responses=True)
    prefix = full_stack.env["CHAT_REDIS_PREFIX"]
    with socket_on(alice, server_a) as alice_ws, socket_on(bob, server_b) as bob_ws:
        # The session registry knows which chat server holds bob's device.
        # (Registration follows the handshake by a moment: the client catches up on anything sent before it.)
        devices = eventually(lambda: registry.hgetall(f"{prefix}:devices:{bob.user_id}"))  # type: ignore[attr-defined]
        assert [str(entry).rpartition("|")[0] for entry in devices.values()] == [server_id(server_b)]
        eventually(lambda: registry.hgetall(f"{prefix}:devices:{alice.user_id}"))  # type: ignore[attr-defined]

        client_msg_id = alice_ws.send_message(chat_id, "across the pipeline")
        ack = alice_ws.expect("ack", client_msg_id=client_msg_id)
        message_id = ack["message_id"]
        assert bob_ws.expect("message", message_id=message_id)["body"] == "across the pipeline"
        assert alice_ws.expect("message", message_id=message_id)["sender"] == alice.username  # type: ignore[attr-defined]

    # Kafka holds the record, keyed by chat_id.
    records = [r for r in kafka_records(full_stack.env["CHAT_KAFKA_TOPIC"]) if r.key == str(chat_id).encode()]
    assert [orjson.loads(r.value)["message_id"] for r in records] == [message_id]
    # Cassandra holds the row in the (chat_id, time bucket) partition.
    bucket = bucket_of(message_id, int(full_stack.env["CHAT_CASSANDRA_BUCKET_SECONDS"]))
    rows = list(
        cassandra.execute(
            "SELECT body, sender, client_msg_id FROM messages_by_chat WHERE chat_id=%s AND bucket=%s AND message_id=%s",
            (chat_id, bucket, uuid.UUID(message_id)),
        )
    )
    assert [(row.body, row.client_msg_id) for row in rows] == [("across the pipeline", client_msg_id)]
    claim = cassandra.execute(
        "SELECT message_id FROM client_message_claims WHERE sender_id=%s AND client_msg_id=%s",
        (alice.user_id, client_msg_id),  # type: ignore[attr-defined]
    ).one()
    assert str(claim.message_id) == message_id
    # Once both have left, the registry forgets their devices.
    assert eventually(lambda: not registry.hgetall(f"{prefix}:devices:{bob.user_id}"))  # type: ignore[attr-defined]


def test_concurrent_and_late_retries_of_one_client_msg_id_make_one_message(
    full_stack: FullStack, full_api: ApiClient, cassandra: Session
) -> None:
    alice, bob = full_api.signup("alice"), full_api.signup("bob")
    chat_id = direct_chat(alice, bob)
    server_a, server_b = full_stack.ports
    claims = redis.Redis.from_url(full_stack.env["CHAT_REDIS_URL"], decode_responses=True)
    claim_key = f"{full_stack.env['CHAT_REDIS_PREFIX']}:claim:{alice.user_id}:"  # type: ignore[attr-defined]
    client_msg_id = str(uuid.uuid4())
    # Eight copies in flight at once, on two chat servers: the Redis claim
    # makes them agree on one message id.
    with socket_on(alice, server_a) as first, socket_on(alice, server_b) as second:
        for _ in range(4):
            first.send_message(chat_id, "once", client_msg_id)
            second.send_message(chat_id, "once", client_msg_id)
        acks = [ws.expect("ack", client_msg_id=client_msg_id) for ws in (first, second) for _ in range(4)]
    message_ids = {ack["message_id"] for ack in acks}
    assert len(message_ids) == 1
    (message_id,) = message_ids
    assert 0 < claims.ttl(claim_key + client_msg_id) <= int(full_stack.env.get("CHAT_CLAIM_TTL_SECONDS", "900"))

    # Once stored, the binding is Cassandra's too, so a retry after Redis has
    # forgotten it (expiry, a flushed Redis) still gets the same ack.
    eventually(
        lambda: cassandra.execute(
            "SELECT message_id FROM client_message_claims WHERE sender_id=%s AND client_msg_id=%s",
            (alice.user_id, client_msg_id),  # type: ignore[attr-defined]
        ).one()
    )
    claims.delete(claim_key + client_msg_id)
    with socket_on(alice, server_b) as late:
        late.send_message(chat_id, "once", client_msg_id)
        assert late.expect("ack", client_msg_id=client_msg_id)["message_id"] == message_id
    history = alice.get(f"/api/chats/{chat_id}/messages").body["messages"]
    assert [item["message_id"] for item in history] == [message_id]


def test_service_discovery_hands_out_the_least_loaded_server(full_stack: FullStack, full_api: ApiClient) -> None:
    user = full_api.signup("lots")
    server_a, server_b = full_stack.ports
    urls = {f"ws://127.0.0.1:{port}/ws/chat/" for port in full_stack.ports}
    assert user.get("/api/servers/assign").body["ws_url"] in urls
    sockets = [socket_on(user, server_a) for _ in range(3)]
    try:
        # Loads are reported by each server's heartbeat, every few seconds.
        assert eventually(
            lambda: user.get("/api/servers/assign").body["ws_url"] == f"ws://127.0.0.1:{server_b}/ws/chat/"
        )
    finally:
        for chat_socket in sockets:
            chat_socket.close()


def test_offline_members_get_a_push_notification_task(full_stack: FullStack, full_api: ApiClient) -> None:
    alice, carol = full_api.signup("alice"), full_api.signup("carol")
    chat_id = direct_chat(alice, carol)
    with socket_on(alice, full_stack.ports[0]) as alice_ws:
        client_msg_id = alice_ws.send_message(chat_id, "are you there?")
        message_id = alice_ws.expect("ack", client_msg_id=client_msg_id)["message_id"]

    def notifications() -> list[tuple[Any, ...]]:
        with psycopg.connect(full_stack.env["DATABASE_URL"]) as connection:
            return connection.execute(
                "SELECT user_id, chat_id, message_id::text, preview FROM messaging_pushnotification WHERE chat_id=%s",
                (chat_id,),
            ).fetchall()

    assert eventually(notifications) == [(carol.user_id, chat_id, message_id, "are you there?")]  # type: ignore[attr-defined]


def test_history_walks_across_bucket_boundaries(full_stack: FullStack, full_api: ApiClient, cassandra: Session) -> None:
    alice, bob = full_api.signup("alice"), full_api.signup("bob")
    chat_id = direct_chat(alice, bob)
    sent = []
    with socket_on(alice, full_stack.ports[1]) as alice_ws:
        for n in range(7):
            client_msg_id = alice_ws.send_message(chat_id, f"tick {n}")
            sent.append(alice_ws.expect("ack", client_msg_id=client_msg_id)["message_id"])
            time.sleep(0.75)  # buckets are 2 s wide here: 7 messages span 3 or more
        alice_ws.expect("message", message_id=sent[-1])
    bucket_seconds = int(full_stack.env["CHAT_CASSANDRA_BUCKET_SECONDS"])
    assert len({bucket_of(message_id, bucket_seconds) for message_id in sent}) >= 3

    newest_first = list(reversed(sent))
    pages: list[str] = []
    before = ""
    while True:
        page = bob.get(f"/api/chats/{chat_id}/messages?limit=2{before}").body["messages"]
        if not page:
            break
        pages.extend(m["message_id"] for m in page)
        before = f"&before={page[-1]['message_id']}"
    assert pages == newest_first

    forward: list[str] = []
    after = f"&after={sent[0]}"
    while True:
        page = bob.get(f"/api/chats/{chat_id}/messages?limit=2{after}").body["messages"]
        if not page:
            break
        forward.extend(reversed([m["message_id"] for m in page]))
        after = f"&after={page[0]['message_id']}"
    assert forward == sent[1:]


def test_the_kafka_client_checksums_record_batches_in_c() -> None:
    # kafka-python falls back to pure Python (about 200 times slower) when
    # the crc32c package is missing: requirements.txt must install it.
    from kafka.record import util

    assert util.crc32c_c is not None


def dispatcher_stats(full_stack: FullStack) -> dict[str, dict[str, Any]]:
    from celery import Celery

    app = Celery(broker=full_stack.env["CELERY_BROKER_URL"])
    stats = app.control.inspect(timeout=5).stats() or {}
    return {name: info["kafka_dispatcher"] for name, info in stats.items() if name.startswith("dispatcher")}


def partition_owner(full_stack: FullStack, chat_id: int) -> tuple[int, str]:
    """The partition holding a chat's messages (one must be there already),
    and the topology name of the dispatcher that reads it."""
    topic = full_stack.env["CHAT_KAFKA_TOPIC"]
    partition = next(r.partition for r in kafka_records(topic) if r.key == str(chat_id).encode())
    worker = next(
        name for name, info in dispatcher_stats(full_stack).items() if f"{topic}-{partition}" in info["assigned"]
    )
    # Celery names the worker "dispatcher<n>@host"; the topology calls it "dispatcher-<n>".
    return partition, "dispatcher-" + worker.partition("@")[0].removeprefix("dispatcher")


def test_dispatchers_commit_on_an_interval_and_once_idle(full_stack: FullStack, full_api: ApiClient) -> None:
    topic, group = full_stack.env["CHAT_KAFKA_TOPIC"], full_stack.env["CHAT_KAFKA_GROUP"]
    alice, bob = full_api.signup("alice"), full_api.signup("bob")
    chat_id = direct_chat(alice, bob)
    before = dispatcher_stats(full_stack)
    with socket_on(alice, full_stack.ports[0]) as alice_ws, socket_on(bob, full_stack.ports[1]) as bob_ws:
        sent = []
        for n in range(30):
            sent.append(alice_ws.send_message(chat_id, f"spaced {n}"))
            time.sleep(0.05)
        acked = [alice_ws.expect("ack", client_msg_id=client_msg_id)["message_id"] for client_msg_id in sent]
        for message_id in acked:
            bob_ws.expect("message", message_id=message_id)
    after = dispatcher_stats(full_stack)
    batches = sum(after[name]["batches"] - before[name]["batches"] for name in after)
    commits = sum(after[name]["commits"] - before[name]["commits"] for name in after)
    # Messages 50 ms apart come one or two to a batch; commits go at most once a second per dispatcher.
    assert batches >= 10
    assert 1 <= commits < batches

    # With nothing more to read, the group's committed offsets reach the end of every partition.
    admin = KafkaAdminClient(bootstrap_servers=["127.0.0.1:9092"])
    consumer = KafkaConsumer(bootstrap_servers=["127.0.0.1:9092"])
    try:
        partitions = [TopicPartition(topic, n) for n in consumer.partitions_for_topic(topic)]
        ends = consumer.end_offsets(partitions)

        def all_committed() -> bool:
            committed = admin.list_group_offsets(group)[group]
            return all(
                committed.get(tp) is not None and committed[tp].offset >= ends[tp] for tp in partitions if ends[tp]
            )

        assert eventually(lambda: all_committed() or None, timeout=10)
    finally:
        consumer.close()
        admin.close()


def test_every_server_connects_its_backends_at_start(full_stack: FullStack) -> None:
    # The chat servers warm up the store and the bus; the dispatchers only
    # the store, since they publish nothing.
    for name, roles in [
        ("chatserver-1", ["message_store", "message_bus"]),
        ("chatserver-2", ["message_store", "message_bus"]),
        ("dispatcher-1", ["message_store"]),
        ("dispatcher-2", ["message_store"]),
    ]:
        log = full_stack.topology.log_path(name).read_text()
        (line,) = [line for line in log.splitlines() if "backends warmed up:" in line]
        reported = line.split("backends warmed up: ", 1)[1].split(", ")
        assert [entry.split(" ready in ")[0] for entry in reported] == roles, line
        assert all(entry.endswith(" ms") for entry in reported), line


def test_dispatchers_report_their_consumers_through_celery_inspect(full_stack: FullStack) -> None:
    from celery import Celery

    app = Celery(broker=full_stack.env["CELERY_BROKER_URL"])
    stats = app.control.inspect(timeout=5).stats() or {}
    dispatchers = {name: info["kafka_dispatcher"] for name, info in stats.items() if name.startswith("dispatcher")}
    assert len(dispatchers) == 2, stats.keys()
    assert all(info["running"] for info in dispatchers.values())
    assert [info["event_loop"] for info in dispatchers.values()] == ["uvloop", "uvloop"]
    topic = full_stack.env["CHAT_KAFKA_TOPIC"]
    every_partition = sorted(f"{topic}-{n}" for n in range(6))

    def split_between_both() -> bool:
        # A dispatcher reports its assignment from its next poll (within 0.5 s).
        reports = dispatcher_stats(full_stack).values()
        return all(info["assigned"] for info in reports) and every_partition == sorted(
            p for info in reports for p in info["assigned"]
        )

    # The two dispatchers split the topic's six partitions between them.
    assert eventually(lambda: split_between_both() or None, timeout=10)
    notifier = next(info for name, info in stats.items() if name.startswith("notifier"))
    assert "kafka_dispatcher" not in notifier  # a disabled step reports nothing


def test_a_stopping_dispatcher_hands_its_partitions_over_without_loss_or_replay(
    full_stack: FullStack, full_api: ApiClient
) -> None:
    group, topology = full_stack.env["CHAT_KAFKA_GROUP"], full_stack.topology
    alice, bob = full_api.signup("alice"), full_api.signup("bob")
    chat_id = direct_chat(alice, bob)
    delivered: list[str] = []
    with socket_on(alice, full_stack.ports[0]) as alice_ws, socket_on(bob, full_stack.ports[1]) as bob_ws:

        def send_and_deliver(label: str) -> None:
            sent = [alice_ws.send_message(chat_id, f"{label} {n}") for n in range(10)]
            for client_msg_id in sent:
                message_id = alice_ws.expect("ack", client_msg_id=client_msg_id)["message_id"]
                bob_ws.expect("message", message_id=message_id)
                delivered.append(message_id)

        send_and_deliver("before")
        # Stop the dispatcher that reads this chat's partition. Celery's warm
        # shutdown stops its loop, which commits what it finished and leaves
        # the group; the other one takes every partition.
        topic = full_stack.env["CHAT_KAFKA_TOPIC"]
        _, stopped = partition_owner(full_stack, chat_id)
        topology.stop_one(stopped)
        try:
            every_partition = sorted(f"{topic}-{n}" for n in range(6))
            assert eventually(
                lambda: [
                    info
                    for info in dispatcher_stats(full_stack).values()
                    if info["running"] and sorted(info["assigned"]) == every_partition
                ],
                timeout=30,
            )
            send_and_deliver("while one dispatcher is down")
        finally:
            topology.start_one(stopped)
            wait_for_consumer_group(bootstrap_servers=["127.0.0.1:9092"], group=group, members=2)
        send_and_deliver("after it came back")
        # Nothing was replayed to bob: every message arrived once.
        assert [frame["message_id"] for frame in bob_ws.frames_of("message", quiet_for=2.0)] == []
    assert len(set(delivered)) == 30


def test_a_killed_dispatcher_is_replaced_and_replays_only_what_it_had_not_committed(
    full_stack: FullStack, full_api: ApiClient
) -> None:
    group, topic, topology = full_stack.env["CHAT_KAFKA_GROUP"], full_stack.env["CHAT_KAFKA_TOPIC"], full_stack.topology
    alice, bob = full_api.signup("alice"), full_api.signup("bob")
    chat_id = direct_chat(alice, bob)
    chat_key = str(chat_id).encode()
    with socket_on(alice, full_stack.ports[0]) as alice_ws, socket_on(bob, full_stack.ports[1]) as bob_ws:

        def send(label: str, count: int) -> list[str]:
            sent = [alice_ws.send_message(chat_id, f"{label} {n}") for n in range(count)]
            return [alice_ws.expect("ack", client_msg_id=client_msg_id)["message_id"] for client_msg_id in sent]

        def arrive(message_ids: list[str], timeout: float = 10.0) -> None:
            for message_id in message_ids:
                bob_ws.expect("message", message_id=message_id, timeout=timeout)

        first = send("first", 1)
        arrive(first)
        partition, owner = partition_owner(full_stack, chat_id)
        # A burst, and the kill as soon as bob has it: the owner commits at most
        # once a second and when it finds nothing to read (after a 500 ms poll),
        # so the end of the burst is normally delivered but not committed.
        burst = send("burst", 20)
        arrive(burst)
        topology.kill_one(owner)
        admin = KafkaAdminClient(bootstrap_servers=["127.0.0.1:9092"])
        try:
            # Nobody reads the partition until the group's session timeout
            # notices the dead member, so this is what the survivor starts from.
            committed = admin.list_group_offsets(group)[group].get(TopicPartition(topic, partition))
            start = committed.offset if committed is not None else 0
            # Sends go on: the chat servers ack once Kafka has a message.
            during = send("while the group has a dead member", 10)
            # The group drops the dead member after CHAT_KAFKA_SESSION_TIMEOUT_MS
            # (10 s) and the survivor takes the partition; with kafka-python's
            # default of 45 s nothing would arrive within this bound.
            arrive(during, timeout=30)
        finally:
            admin.close()
            topology.start_one(owner)
            wait_for_consumer_group(bootstrap_servers=["127.0.0.1:9092"], group=group, members=2)
        after = send("after it came back", 5)
        arrive(after)
        replayed = [frame["message_id"] for frame in bob_ws.frames_of("message", quiet_for=2.0)]

    records = [record for record in kafka_records(topic) if record.key == chat_key]
    uncommitted = (
        {orjson.loads(record.value)["message_id"] for record in records if record.offset >= start}
        - set(during)
        - set(after)
    )
    # The burst reached the owner in several batches and only the first was
    # committed (a second commit needs a second, or an idle poll).
    assert uncommitted, "the kill came after the owner committed the whole burst: nothing to replay"
    # The survivor replays from the dead owner's last commit: exactly the
    # delivered messages it had not committed, each once, and nothing older.
    assert sorted(replayed) == sorted(uncommitted)
    # The store kept one copy of each, the replays included.
    history = alice.get(f"/api/chats/{chat_id}/messages?limit=100").body["messages"]
    assert sorted(message["message_id"] for message in history) == sorted(first + burst + during + after)
