"""The four systems under test: how to start, stop and fill each.

- ``raw``: ``bench.baselines.raw_relay``, one asyncio process.
- ``channels``: ``bench.baselines.channels_tutorial`` on one daphne, channels-redis.
- ``embedded``: this project's default (``CHAT_MODE=embedded``), one chat server (daphne), as ``make run`` serves it.
- ``full``: this project's full pipeline (``chatsite.topology``): two chat
  servers, two Kafka dispatchers, one notification worker, on the real Kafka,
  Cassandra, Redis and PostgreSQL of ``scripts/services/services.sh``.

A target's ``start``/``stop`` run its processes; ``prepare``/``teardown``
create and drop what outlives them (databases, keyspace, topic, Redis keys).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import REPO, free_port, free_port_pair, port_answers, python_env, stop_process, tail, wait_for_port
from bench.monitor import pids_listening_on

SERVICE_PORTS = {"redis": 6379, "postgres": 5432, "kafka": 9092, "cassandra": 9042}
# Below this many messages one filler process is quicker than starting several.
PARALLEL_FILL_FROM = 50_000


@dataclass(frozen=True)
class BenchUser:
    index: int
    user_id: int = 0
    username: str = ""
    token: str = ""


@dataclass(frozen=True)
class BenchChat:
    chat_id: int
    members: tuple[int, ...]  # user indexes; members[0] created the chat
    room: str = ""


@dataclass
class HistoryFill:
    stored: int
    seconds: float
    cursors: list[tuple[int, str, int]] = field(default_factory=list)
    method: str = ""


@dataclass
class Population:
    users: list[BenchUser]
    chats: list[BenchChat]
    seconds: float = 0.0
    history: HistoryFill | None = None


@dataclass(frozen=True)
class HistoryRequest:
    """Messages to store directly in some of a population's chats."""

    chat_positions: list[int]
    per_chat: int
    span_seconds: float
    end_unix: float
    body_chars: int
    cursors_per_chat: int
    method: str = "batch"

    def fields(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "per_chat": self.per_chat,
            "span_seconds": self.span_seconds,
            "end_unix": self.end_unix,
            "body_chars": self.body_chars,
            "cursors_per_chat": self.cursors_per_chat,
        }


@dataclass
class TargetOptions:
    workdir: Path
    run_id: str
    redis_db_channels: int = 11
    redis_db_full: int = 12
    full_bucket_seconds: int = 10 * 24 * 3600
    fill_processes: int = 2
    send_limit: int = 1_000_000
    full_chat_servers: int = 2
    full_dispatchers: int = 2


def ensure_services(names: list[str]) -> dict[str, Any]:
    """Start the real servers with ``services.sh up`` (idempotent).

    When the ports are already served by another checkout's servers, ``up``
    refuses to start a second copy; those servers are then used as they are,
    and the report says so.
    """
    script = REPO / "scripts" / "services" / "services.sh"
    done = subprocess.run([str(script), "up", *names], capture_output=True, text=True, cwd=REPO)
    if done.returncode == 0:
        return {"services": names, "started_or_running": True, "note": "services.sh up succeeded"}
    answering = {name: port_answers(SERVICE_PORTS[name]) for name in names}
    if all(answering.values()):
        return {
            "services": names,
            "started_or_running": True,
            "note": "services.sh up refused (ports held by servers of another checkout); using those servers",
        }
    raise RuntimeError(f"services did not start ({answering}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


class Target:
    name = "target"
    description = ""
    project = False
    services: list[str] = []

    def __init__(self, options: TargetOptions) -> None:
        self.options = options
        self.workdir = options.workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts = 0
        self.info: dict[str, Any] = {"description": self.description}

    # lifecycle
    def prepare(self) -> None:
        if self.services:
            self.info["services"] = ensure_services(self.services)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        pass

    def check_alive(self) -> str | None:
        """None while every server process runs, else what died (with its log tail)."""
        raise NotImplementedError

    # processes
    def server_pids(self) -> dict[str, int]:
        raise NotImplementedError

    def infra_pids(self) -> dict[str, int]:
        found = pids_listening_on([SERVICE_PORTS[name] for name in self.services])
        return {name: found[SERVICE_PORTS[name]] for name in self.services if SERVICE_PORTS[name] in found}

    def idle_process(self) -> str:
        """The one server process that holds the idle scenario's connections."""
        return next(iter(self.server_pids()))

    # clients
    def populate(
        self, tag: str, users: int, chats: list[list[int]], history: HistoryRequest | None = None
    ) -> Population:
        """``users`` users and group chats of the given user indexes, and the
        history asked for (targets without a store refuse it)."""
        if history is not None:
            raise RuntimeError(f"{self.name} keeps no history")
        return Population(
            users=[BenchUser(index=index) for index in range(users)],
            chats=[
                BenchChat(chat_id=number + 1, members=tuple(members), room=f"{tag}r{number}")
                for number, members in enumerate(chats)
            ],
        )

    def client_endpoint(self, user: BenchUser, chat: BenchChat, slot: int) -> tuple[str, tuple[tuple[str, str], ...]]:
        raise NotImplementedError

    def http_bases(self) -> list[str]:
        return []

    def logs(self) -> list[Path]:
        return sorted(self.workdir.glob("**/*.log"))


class _SingleProcessTarget(Target):
    """A target that is one server process on one port."""

    def __init__(self, options: TargetOptions) -> None:
        super().__init__(options)
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log = self.workdir / "server.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return {}

    def before_start(self) -> None:
        pass

    def start(self) -> None:
        self.starts += 1
        self.before_start()
        self.port = free_port()
        self.log = self.workdir / f"server-{self.starts}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=REPO, env=python_env(self.environment()), stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, self.process, self.log)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def check_alive(self) -> str | None:
        if self.process is None:
            return "not started"
        if self.process.poll() is not None:
            return f"{self.name} server exited with {self.process.returncode}:\n{tail(self.log)}"
        return None

    def server_pids(self) -> dict[str, int]:
        return {f"{self.name}-server": self.process.pid} if self.process is not None else {}


class RawRelayTarget(_SingleProcessTarget):
    name = "raw"
    description = "raw asyncio websockets relay, one process (bench/baselines/raw_relay.py)"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.baselines.raw_relay", "--port", str(self.port)]

    def client_endpoint(self, user: BenchUser, chat: BenchChat, slot: int) -> tuple[str, tuple[tuple[str, str], ...]]:
        return f"ws://127.0.0.1:{self.port}/room/{chat.room}", ()


class ChannelsTutorialTarget(_SingleProcessTarget):
    name = "channels"
    description = "Channels tutorial design: AsyncWebsocketConsumer + group_send over channels-redis, one daphne"
    services = ["redis"]

    def __init__(self, options: TargetOptions) -> None:
        super().__init__(options)
        self.redis_url = f"redis://127.0.0.1:6379/{options.redis_db_channels}"
        self.prefix = f"bench{options.run_id}tut"

    def command(self) -> list[str]:
        application = "bench.baselines.channels_tutorial.asgi:application"
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), application]

    def environment(self) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": "bench.baselines.channels_tutorial.settings",
            "BENCH_CHANNELS_REDIS_URL": self.redis_url,
            "BENCH_CHANNELS_PREFIX": self.prefix,
        }

    def client_endpoint(self, user: BenchUser, chat: BenchChat, slot: int) -> tuple[str, tuple[tuple[str, str], ...]]:
        return f"ws://127.0.0.1:{self.port}/ws/room/{chat.room}/", ()

    def teardown(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        for offset in range(0, len(keys), 500):
            client.delete(*keys[offset : offset + 500])
        client.close()


class _ProjectTarget(Target):
    """This project, driven through its own protocol."""

    project = True

    def __init__(self, options: TargetOptions) -> None:
        super().__init__(options)
        self.env: dict[str, str] = {}
        self.ws_urls: list[str] = []
        self.discovery: list[str] = []
        self.setup_process: subprocess.Popen[str] | None = None
        self.setup_env: dict[str, str] = {}

    def setup_call(self, request: dict[str, Any], *, name: str, one_shot: bool = False) -> dict[str, Any]:
        """Run a ``bench.setup_data`` request with the target's environment:
        on the long-lived setup process, or ``one_shot`` in a process of its own
        (parallel history fillers)."""
        request_path = self.workdir / f"{name}.request.json"
        response_path = self.workdir / f"{name}.response.json"
        request_path.write_text(json.dumps(request))
        if one_shot:
            done = subprocess.run(
                [sys.executable, "-m", "bench.setup_data", str(request_path), str(response_path)],
                cwd=REPO,
                env=python_env(self.env),
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                output = f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
                raise RuntimeError(f"bench.setup_data {request['op']} failed:\n{output}")
        else:
            process = self.setup_server()
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(f"{request_path}\t{response_path}\n")
            process.stdin.flush()
            # Only our own marker line counts: app code may print to stdout too.
            while (line := process.stdout.readline()) and line.strip() != f"done {response_path}":
                pass
            if not line:
                raise RuntimeError(f"bench.setup_data died:\n{tail(self.workdir / 'setup.log')}")
        result: dict[str, Any] = json.loads(response_path.read_text())
        response_path.unlink()
        request_path.unlink()
        if "error" in result:
            raise RuntimeError(f"bench.setup_data {request['op']} failed:\n{result['error']}")
        return result

    def setup_server(self) -> subprocess.Popen[str]:
        """The setup process for the current environment (started on demand)."""
        process = self.setup_process
        if process is not None and process.poll() is None and self.setup_env == self.env:
            return process
        self.close_setup()
        with (self.workdir / "setup.log").open("a") as log:
            self.setup_process = subprocess.Popen(
                [sys.executable, "-m", "bench.setup_data", "--serve"],
                cwd=REPO,
                env=python_env(self.env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.setup_env = dict(self.env)
        return self.setup_process

    def close_setup(self) -> None:
        process, self.setup_process = self.setup_process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def manage(self, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO, env=python_env(self.env), capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")

    def populate(
        self, tag: str, users: int, chats: list[list[int]], history: HistoryRequest | None = None
    ) -> Population:
        began = time.monotonic()
        parallel = (
            history is not None
            and self.fill_parallelism() > 1
            and (history.per_chat * len(history.chat_positions) >= PARALLEL_FILL_FROM)
        )
        request: dict[str, Any] = {"op": "population", "prefix": f"{tag}_", "users": users, "chats": chats}
        if history is not None and not parallel:
            request["history"] = {"chat_positions": history.chat_positions, "seed": 1, **history.fields()}
        answer = self.setup_call(request, name=tag)
        population = Population(
            users=[
                BenchUser(index=index, user_id=row["id"], username=row["username"], token=row["token"])
                for index, row in enumerate(answer["users"])
            ],
            chats=[BenchChat(chat_id=row["chat_id"], members=tuple(row["members"])) for row in answer["chats"]],
            seconds=answer["seconds"],
        )
        if "history" in answer:
            filled = answer["history"]
            population.history = HistoryFill(
                stored=filled["stored"],
                seconds=filled["seconds"],
                cursors=[(int(c[0]), str(c[1]), int(c[2])) for c in filled["cursors"]],
                method=filled["method"],
            )
        elif history is not None:
            population.history = self.fill_parallel(population, history, tag)
        population.seconds = round(time.monotonic() - began, 2)
        if population.users:
            self.discover(population.users[0].token)
        return population

    def discover(self, token: str) -> None:
        """Ask service discovery, as a client does before connecting; keep what it said."""
        answers = []
        for base in self.http_bases():
            request = urllib.request.Request(base + "/api/servers/assign", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                answers.append(json.loads(response.read())["ws_url"])
        unknown = [url for url in answers if url not in self.ws_urls]
        if unknown:
            raise RuntimeError(f"/api/servers/assign handed out {unknown}, not one of {self.ws_urls}")
        self.discovery = answers

    def client_endpoint(self, user: BenchUser, chat: BenchChat, slot: int) -> tuple[str, tuple[tuple[str, str], ...]]:
        # Discovery hands out the least-loaded server from heartbeats 5 s old, so a
        # burst of clients would all land on one; spread them evenly instead.
        url = self.ws_urls[slot % len(self.ws_urls)]
        return url, (("Authorization", f"Bearer {user.token}"),)

    def fill_parallel(self, population: Population, history: HistoryRequest, tag: str) -> HistoryFill:
        """Several filler processes, each with a share of the chats: the
        Cassandra driver's Python side, not the node, limits one filler."""
        processes = max(1, min(self.fill_parallelism(), len(history.chat_positions)))
        shares = [history.chat_positions[index::processes] for index in range(processes)]

        def fill(number: int, share: list[int]) -> dict[str, Any]:
            rows = []
            for position in share:
                chat = population.chats[position]
                sender = population.users[chat.members[0]]
                rows.append({"chat_id": chat.chat_id, "sender_id": sender.user_id, "sender": sender.username})
            request = {"op": "history", "chats": rows, "seed": number + 1, **history.fields()}
            return self.setup_call(request, name=f"{tag}-history-{number}", one_shot=True)

        began = time.monotonic()
        with ThreadPoolExecutor(processes) as pool:
            answers = list(pool.map(fill, range(processes), shares))
        return HistoryFill(
            stored=sum(answer["stored"] for answer in answers),
            seconds=round(time.monotonic() - began, 2),
            cursors=[(int(c[0]), str(c[1]), int(c[2])) for answer in answers for c in answer["cursors"]],
            method=", ".join(sorted({answer["method"] for answer in answers})),
        )

    def fill_parallelism(self) -> int:
        return 1


class EmbeddedTarget(_ProjectTarget, _SingleProcessTarget):
    name = "embedded"
    description = "this project, CHAT_MODE=embedded: one chat server (daphne), SQLite, in-process bus, in-memory layer"

    def prepare(self) -> None:
        super().prepare()
        self.template = self.workdir / "template.sqlite3"
        self.env = self.base_env(self.template)
        self.manage("migrate", "--noinput")

    def base_env(self, database: Path) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "CHAT_MODE": "embedded",
            "CHAT_VAR_DIR": str(self.workdir),
            "CHAT_SQLITE_PATH": str(database),
            # Raised so the per-connection send limit never shapes the traffic.
            "CHAT_SEND_BURST": str(self.options.send_limit),
            "CHAT_SEND_RATE_PER_SECOND": str(self.options.send_limit),
        }

    def before_start(self) -> None:
        # A fresh copy of the migrated database for every start: no scenario
        # runs on rows another one left behind.
        database = self.workdir / f"db-{self.starts}.sqlite3"
        shutil.copyfile(self.template, database)
        self.env = self.base_env(database)

    def command(self) -> list[str]:
        # What `make run` runs: manage.py picks the event loop before daphne starts.
        return [sys.executable, "manage.py", "chatserver", "--host", "127.0.0.1", "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        return self.env

    def start(self) -> None:
        super().start()
        self.ws_urls = [f"ws://127.0.0.1:{self.port}/ws/chat/"]

    def http_bases(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}"]

    def fill_parallelism(self) -> int:
        # SQLite takes one writer at a time, but most of a fill is Python
        # building rows, which a second process does side by side.
        return self.options.fill_processes

    def teardown(self) -> None:
        self.close_setup()
        for database in self.workdir.glob("*.sqlite3*"):
            database.unlink(missing_ok=True)


class FullTarget(_ProjectTarget):
    name = "full"
    description = (
        "this project, CHAT_MODE=full: chat servers (daphne; 2 by default), Kafka dispatchers (Celery; 2 by "
        "default), 1 notifier; Kafka, Cassandra, Redis, PostgreSQL"
    )
    services = ["redis", "postgres", "kafka", "cassandra"]

    def __init__(self, options: TargetOptions) -> None:
        super().__init__(options)
        self.topology: Any = None
        self.port = 0
        suffix = options.run_id
        self.database = f"bench_{suffix}"
        self.redis_url = f"redis://127.0.0.1:6379/{options.redis_db_full}"
        self.names = {
            "topic": f"bench_messages_{suffix}",
            "group": f"bench_dispatchers_{suffix}",
            "keyspace": f"bench_{suffix}",
            "prefix": f"bench{suffix}",
        }

    def prepare(self) -> None:
        super().prepare()
        import psycopg
        import redis

        admin_url = os.environ.get("CHAT_BENCH_POSTGRES_URL", "postgres://chat:chat@127.0.0.1:5432/postgres")
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.database}"')
            connection.execute(f'CREATE DATABASE "{self.database}"')
        self.admin_url = admin_url
        # The Celery queues have fixed names; a database of our own keeps a
        # previous run's leftovers from reaching this run's workers.
        redis.Redis.from_url(self.redis_url).flushdb()
        self.env = {
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "CHAT_MODE": "full",
            "CHAT_VAR_DIR": str(self.workdir),
            "DATABASE_URL": admin_url.rsplit("/", 1)[0] + f"/{self.database}",
            "CHAT_REDIS_URL": self.redis_url,
            "CHAT_REDIS_PREFIX": self.names["prefix"],
            "CELERY_BROKER_URL": self.redis_url,
            "CHAT_KAFKA_TOPIC": self.names["topic"],
            "CHAT_KAFKA_GROUP": self.names["group"],
            "CHAT_CASSANDRA_KEYSPACE": self.names["keyspace"],
            # The production default (ten days), unlike the tests' 2 s: history
            # spread over months then spans a realistic number of partitions.
            "CHAT_CASSANDRA_BUCKET_SECONDS": str(self.options.full_bucket_seconds),
            "CHAT_SEND_BURST": str(self.options.send_limit),
            "CHAT_SEND_RATE_PER_SECOND": str(self.options.send_limit),
        }
        # PostgreSQL tables and the Kafka topic + Cassandra schema are independent.
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda command: self.manage(*command), [("migrate", "--noinput"), ("chat_setup",)]))
        self.info["names"] = {**self.names, "database": self.database, "redis": self.redis_url}
        self.info["topology"] = {
            "chat_servers": self.options.full_chat_servers,
            "dispatchers": self.options.full_dispatchers,
            "notifiers": 1,
        }

    def start(self) -> None:
        from chatsite.topology import Topology, full_topology, wait_for_consumer_group

        self.starts += 1
        self.port = free_port_pair()
        specs = full_topology(
            host="127.0.0.1",
            port=self.port,
            chat_servers=self.options.full_chat_servers,
            dispatchers=self.options.full_dispatchers,
        )
        self.topology = Topology(specs, env=self.env, log_dir=self.workdir / f"logs-{self.starts}")
        self.topology.start()
        try:
            self.topology.wait_for_ports()
            wait_for_consumer_group(
                bootstrap_servers=["127.0.0.1:9092"], group=self.names["group"], members=self.options.full_dispatchers
            )
            self.topology.check_alive()
        except Exception:
            self.stop()
            raise
        self.ws_urls = [f"ws://127.0.0.1:{spec.port}/ws/chat/" for spec in specs if spec.port is not None]

    def stop(self) -> None:
        if self.topology is not None:
            self.topology.stop()
            self.topology = None

    def check_alive(self) -> str | None:
        if self.topology is None:
            return "not started"
        try:
            self.topology.check_alive()
        except RuntimeError as exc:
            return str(exc)
        return None

    def server_pids(self) -> dict[str, int]:
        if self.topology is None:
            return {}
        return {name: process.pid for name, process in self.topology.processes.items()}

    def idle_process(self) -> str:
        return "chatserver-1"

    def http_bases(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port + index}" for index in range(len(self.ws_urls))]

    def fill_parallelism(self) -> int:
        return self.options.fill_processes

    def teardown(self) -> None:
        self.close_setup()
        steps = [self._drop_keyspace, self._drop_topic, self._drop_database, self._flush_redis]
        # Independent servers: dropping side by side saves seconds in every --quick run.
        with ThreadPoolExecutor(len(steps)) as pool:
            errors = [error for error in pool.map(_attempt, steps) if error]
        if errors:
            self.info["teardown_errors"] = errors

    def _drop_keyspace(self) -> None:
        from cassandra.cluster import Cluster

        cluster = Cluster(["127.0.0.1"], port=SERVICE_PORTS["cassandra"])
        try:
            cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {self.names['keyspace']}", timeout=120)
        finally:
            cluster.shutdown()

    def _drop_topic(self) -> None:
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=["127.0.0.1:9092"], client_id="bench-teardown")
        try:
            admin.delete_topics([self.names["topic"]])
            admin.delete_groups([self.names["group"]])
        finally:
            admin.close()

    def _drop_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def _flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()


def _attempt(step: Any) -> str | None:
    try:
        step()
    except Exception as exc:
        return f"{getattr(step, '__name__', step)}: {exc!r}"
    return None


TARGETS: dict[str, type[Target]] = {
    "raw": RawRelayTarget,
    "channels": ChannelsTutorialTarget,
    "embedded": EmbeddedTarget,
    "full": FullTarget,
}
