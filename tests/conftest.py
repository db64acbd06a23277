from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatsite.topology import Topology, free_port, free_port_pair, full_topology, wait_for_consumer_group
from tests.helpers import ApiClient, FullStack, LiveServer, ensure_services

REPO = Path(__file__).resolve().parent.parent


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s:\n{log.read_text()[-3000:]}")


def start_chat_server(*, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``manage.py chatserver`` on 127.0.0.1:port, its output in ``log``."""
    with log.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "manage.py", "chatserver", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture(scope="session")
def live_server_embedded() -> Iterator[LiveServer]:
    """A real chat server (daphne) serving the embedded default on a free
    port, started the way `make run` starts it."""
    workdir = Path(tempfile.mkdtemp(prefix="chat-live-"))
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        CHAT_MODE="embedded",
        CHAT_VAR_DIR=str(workdir),
        CHAT_SQLITE_PATH=str(workdir / "db.sqlite3"),
        CHAT_SEND_BURST="1000",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO, env=env, check=True, capture_output=True
    )
    port = free_port()
    log = workdir / "chatserver.log"
    process = start_chat_server(port=port, env=env, log=log)
    try:
        wait_for_port(port, process, log)
        yield LiveServer(base_url=f"http://127.0.0.1:{port}", log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def create_postgres_database(name: str) -> str:
    import psycopg

    admin_url = os.environ.get("CHAT_TEST_POSTGRES_URL", "postgres://chat:chat@127.0.0.1:5432/postgres")
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def full_stack() -> Iterator[FullStack]:
    """The full pipeline on real Kafka, Cassandra, Redis and PostgreSQL: two
    chat servers, two Celery dispatchers, one notification worker."""
    ensure_services()
    run_id = f"t{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="chat-full-"))
    redis_url = os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    env = {
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "CHAT_MODE": "full",
        "CHAT_VAR_DIR": str(workdir),
        "DATABASE_URL": create_postgres_database(f"chat_{run_id}"),
        "CHAT_REDIS_URL": redis_url,
        "CHAT_REDIS_PREFIX": f"chat{run_id}",
        "CELERY_BROKER_URL": redis_url,
        "CHAT_KAFKA_TOPIC": f"incoming_messages_{run_id}",
        "CHAT_KAFKA_GROUP": f"dispatchers_{run_id}",
        "CHAT_CASSANDRA_KEYSPACE": f"chat_{run_id}",
        # Small buckets, so ordinary tests cross partition boundaries.
        "CHAT_CASSANDRA_BUCKET_SECONDS": "2",
        "CHAT_SEND_BURST": "1000",
    }
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    setup_env = {**os.environ, **env}
    for command in (["migrate", "--noinput"], ["chat_setup"]):
        done = subprocess.run(
            [sys.executable, "manage.py", *command], cwd=REPO, env=setup_env, capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(f"manage.py {' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    port = free_port_pair()
    topology = Topology(full_topology(host="127.0.0.1", port=port), env=env, log_dir=workdir / "logs")
    topology.start()
    try:
        topology.wait_for_ports()
        wait_for_consumer_group(bootstrap_servers=["127.0.0.1:9092"], group=env["CHAT_KAFKA_GROUP"], members=2)
        topology.check_alive()
        yield FullStack(
            base_url=f"http://127.0.0.1:{port}",
            log=workdir / "logs",
            env=env,
            ports=[port, port + 1],
            topology=topology,
        )
    finally:
        topology.stop()
        drop_cassandra_keyspace(env["CHAT_CASSANDRA_KEYSPACE"])
        drop_kafka_topic_and_group(env["CHAT_KAFKA_TOPIC"], env["CHAT_KAFKA_GROUP"])


def drop_kafka_topic_and_group(topic: str, group: str) -> None:
    """A run's topic and consumer group would otherwise stay on the shared broker."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=["127.0.0.1:9092"])
    try:
        admin.delete_topics([topic], timeout_ms=30000)
        admin.delete_groups([group])
    finally:
        admin.close()


def drop_cassandra_keyspace(keyspace: str) -> None:
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=int(os.environ.get("CHAT_CASSANDRA_PORT", "9042")))
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
    finally:
        cluster.shutdown()


@pytest.fixture(params=["embedded", "full"])
def chat_server(request: pytest.FixtureRequest) -> LiveServer:
    """The same protocol tests run against both topologies."""
    server: LiveServer = request.getfixturevalue("full_stack" if request.param == "full" else "live_server_embedded")
    return server


@pytest.fixture
def api(chat_server: LiveServer) -> ApiClient:
    return ApiClient(chat_server.base_url)
