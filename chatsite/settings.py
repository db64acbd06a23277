"""Settings for the chat service.

Every knob is read from the environment here and nowhere else. ``CHAT_MODE``
selects the backends: ``embedded`` (the default: SQLite, in-memory channel
layer, in-process bus and registries) or ``full`` (Kafka, Cassandra, Redis).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from chatsite.gc_tuning import SERVING_YOUNG_THRESHOLD

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise RuntimeError(f"setting {name} must be an integer, got {raw!r}") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise RuntimeError(f"setting {name} must be a number, got {raw!r}") from exc


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


VAR_DIR = Path(env_str("CHAT_VAR_DIR", str(BASE_DIR / "var")))
# Runtime files (SQLite databases, logs) live here; make sure it exists.
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env_str("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me-in-production-0123456789")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "accounts",
    "messaging",
    "presence",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chatsite.api.ApiErrorMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_from_url(url: str) -> dict[str, object]:
    """A Django DATABASES entry from ``postgres://user:password@host:port/name``."""
    parsed = urlsplit(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise RuntimeError(f"DATABASE_URL must be a postgres:// URL, got scheme {parsed.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60),
        "CONN_HEALTH_CHECKS": True,
    }


DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("CHAT_SQLITE_PATH", str(VAR_DIR / "db.sqlite3")),
            # SQLite serialises writers; wait for the lock instead of failing fast.
            # WAL with synchronous=NORMAL: readers do not block the writer and a
            # commit does not wait for an fsync (a power cut may lose the last
            # commits, never corrupt the file).
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not shared-cache memory: threads of the I/O pool then wait
            # for each other's locks like in production instead of failing.
            "TEST": {"NAME": str(VAR_DIR / "test-db.sqlite3")},
            # Each I/O-pool thread keeps its connection: reopening one (and
            # re-running the pragmas) per query was a fifth of a flood's CPU.
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 600),
            "CONN_HEALTH_CHECKS": True,
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("CHAT_LOG_LEVEL", "INFO")},
    # The Kafka and Cassandra clients narrate every connection at INFO.
    "loggers": {
        "kafka": {"level": env_str("CHAT_CLIENT_LOG_LEVEL", "WARNING")},
        "cassandra": {"level": env_str("CHAT_CLIENT_LOG_LEVEL", "WARNING")},
    },
}

# --- The chat service -------------------------------------------------------

CHAT_MODE = env_str("CHAT_MODE", "embedded")
if CHAT_MODE not in {"embedded", "full"}:
    raise RuntimeError(f"CHAT_MODE must be 'embedded' or 'full', got {CHAT_MODE!r}")

# Longest message body accepted, in characters.
CHAT_MAX_BODY_CHARS = env_int("CHAT_MAX_BODY_CHARS", 4000)
# Largest WebSocket frame accepted, in bytes; bigger frames are refused unread.
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 64 * 1024)
CHAT_MAX_GROUP_MEMBERS = env_int("CHAT_MAX_GROUP_MEMBERS", 1000)
# A chat server trusts a membership it checked this recently (a removed member
# can still send for up to this long); 0 checks the database every time.
CHAT_MEMBERSHIP_CACHE_SECONDS = env_float("CHAT_MEMBERSHIP_CACHE_SECONDS", 5.0)
CHAT_MEMBERSHIP_CACHE_SIZE = env_int("CHAT_MEMBERSHIP_CACHE_SIZE", 100_000)
# An API process trusts a bearer token it looked up this recently (a deleted
# token or a deactivated user is still accepted for up to this long); 0 looks
# the token up on every request.
CHAT_AUTH_CACHE_SECONDS = env_float("CHAT_AUTH_CACHE_SECONDS", 5.0)
CHAT_AUTH_CACHE_SIZE = env_int("CHAT_AUTH_CACHE_SIZE", 100_000)
# How long the claim registry (Redis, or memory on the embedded default) binds
# a (sender, client_msg_id) to its message id; it must exceed the longest time a
# message can wait between its ack and the store (after that the store answers).
CHAT_CLAIM_TTL_SECONDS = env_int("CHAT_CLAIM_TTL_SECONDS", 900)
# Bindings the embedded default's in-memory registry holds at most (oldest go first).
CHAT_CLAIM_REGISTRY_SIZE = env_int("CHAT_CLAIM_REGISTRY_SIZE", 200_000)
CHAT_MAX_CHAT_NAME_CHARS = 100
CHAT_HISTORY_DEFAULT_LIMIT = 50
CHAT_HISTORY_MAX_LIMIT = 200
# Per-connection token bucket for "send" frames.
CHAT_SEND_RATE_PER_SECOND = env_float("CHAT_SEND_RATE_PER_SECOND", 20.0)
CHAT_SEND_BURST = env_int("CHAT_SEND_BURST", 60)
# Sends one connection may have between frame and ack at once.
CHAT_MAX_SENDS_IN_FLIGHT = env_int("CHAT_MAX_SENDS_IN_FLIGHT", 64)
# A device counts as online while it heartbeats within this many seconds.
CHAT_PRESENCE_TIMEOUT_SECONDS = env_int("CHAT_PRESENCE_TIMEOUT_SECONDS", 90)
# Largest batch the in-process bus hands the dispatcher at once.
CHAT_DISPATCH_BATCH_SIZE = env_int("CHAT_DISPATCH_BATCH_SIZE", 500)
# The ws_url handed out by service discovery; empty means "derive it from the
# request's own host", which is right for a single server.
CHAT_PUBLIC_WS_URL = env_str("CHAT_PUBLIC_WS_URL", "")
CHAT_SERVER_ID = env_str("CHAT_SERVER_ID", f"{os.uname().nodename}-{os.getpid()}")

# A chat server counts as live while it heartbeats within this many seconds.
CHAT_SERVER_TTL_SECONDS = env_float("CHAT_SERVER_TTL_SECONDS", 15.0)
CHAT_SERVER_HEARTBEAT_SECONDS = env_float("CHAT_SERVER_HEARTBEAT_SECONDS", 5.0)
# Wait before a dispatcher retries a failed batch.
CHAT_DISPATCH_RETRY_SECONDS = env_float("CHAT_DISPATCH_RETRY_SECONDS", 1.0)
# Dispatchers commit Kafka offsets at most this often (and when idle); 0 commits
# after every batch. A crashed dispatcher's successor replays up to this much.
CHAT_DISPATCH_COMMIT_INTERVAL_SECONDS = env_float("CHAT_DISPATCH_COMMIT_INTERVAL_SECONDS", 1.0)
CHAT_CHANNEL_CAPACITY = env_int("CHAT_CHANNEL_CAPACITY", 1000)

# Real engines (CHAT_MODE=full).
CHAT_REDIS_URL = env_str("CHAT_REDIS_URL", "redis://127.0.0.1:6379/0")
CHAT_REDIS_PREFIX = env_str("CHAT_REDIS_PREFIX", "chat")
# redis-py 8's default pool fails with "Too many connections" at about 100 sockets.
CHAT_REDIS_MAX_CONNECTIONS = env_int("CHAT_REDIS_MAX_CONNECTIONS", 1000)
CHAT_REDIS_TIMEOUT_SECONDS = env_float("CHAT_REDIS_TIMEOUT_SECONDS", 5.0)
CHAT_KAFKA_BOOTSTRAP_SERVERS = env_list("CHAT_KAFKA_BOOTSTRAP_SERVERS", ["127.0.0.1:9092"])
CHAT_KAFKA_TOPIC = env_str("CHAT_KAFKA_TOPIC", "incoming_messages")
CHAT_KAFKA_PARTITIONS = env_int("CHAT_KAFKA_PARTITIONS", 6)
CHAT_KAFKA_REPLICATION_FACTOR = env_int("CHAT_KAFKA_REPLICATION_FACTOR", 1)
CHAT_KAFKA_GROUP = env_str("CHAT_KAFKA_GROUP", "dispatchers")
# A dispatcher that stops heartbeating (killed, hung, cut off) loses its
# partitions after this long; until then nobody delivers their messages.
# kafka-python's default is 45 s. Heartbeats go every 3 s from their own thread.
CHAT_KAFKA_SESSION_TIMEOUT_MS = env_int("CHAT_KAFKA_SESSION_TIMEOUT_MS", 10_000)
# A gateway that sends often enough to expect another message within this
# window holds each send until the window ends, and the held sends go to Kafka
# together; a quieter one sends at once. 0 turns it off.
CHAT_KAFKA_COALESCE_MS = env_int("CHAT_KAFKA_COALESCE_MS", 25)
# kafka-python's own batching delay. It has to outlast the back-to-back sends
# of a released window on a busy server (about 1-3 ms), or they split into
# several requests; 5 ms is also the Java producer's default since Kafka 4.0.
CHAT_KAFKA_LINGER_MS = env_int("CHAT_KAFKA_LINGER_MS", 5)
CHAT_KAFKA_MAX_BLOCK_MS = env_int("CHAT_KAFKA_MAX_BLOCK_MS", 3000)
CHAT_KAFKA_REQUEST_TIMEOUT_MS = env_int("CHAT_KAFKA_REQUEST_TIMEOUT_MS", 5000)
CHAT_KAFKA_RETRIES = env_int("CHAT_KAFKA_RETRIES", 5)
CHAT_KAFKA_PUBLISH_TIMEOUT_SECONDS = env_float("CHAT_KAFKA_PUBLISH_TIMEOUT_SECONDS", 10.0)
CHAT_KAFKA_BOOTSTRAP_TIMEOUT_MS = env_int("CHAT_KAFKA_BOOTSTRAP_TIMEOUT_MS", 5000)
CHAT_KAFKA_RECONNECT_BACKOFF_SECONDS = env_float("CHAT_KAFKA_RECONNECT_BACKOFF_SECONDS", 2.0)
CHAT_CASSANDRA_HOSTS = env_list("CHAT_CASSANDRA_HOSTS", ["127.0.0.1"])
CHAT_CASSANDRA_PORT = env_int("CHAT_CASSANDRA_PORT", 9042)
CHAT_CASSANDRA_KEYSPACE = env_str("CHAT_CASSANDRA_KEYSPACE", "chat")
# History partitions are (chat_id, bucket) with buckets this many seconds wide.
CHAT_CASSANDRA_BUCKET_SECONDS = env_int("CHAT_CASSANDRA_BUCKET_SECONDS", 10 * 24 * 3600)
# Empty: the driver learns the local datacenter from the contact points.
CHAT_CASSANDRA_LOCAL_DC = env_str("CHAT_CASSANDRA_LOCAL_DC", "")
CHAT_CASSANDRA_CONSISTENCY = env_str("CHAT_CASSANDRA_CONSISTENCY", "LOCAL_QUORUM")
# Native protocol 4, not the driver's default 5: the driver frames v5's
# checksummed segments in pure Python, about a seventh of a request's client CPU.
CHAT_CASSANDRA_PROTOCOL_VERSION = env_int("CHAT_CASSANDRA_PROTOCOL_VERSION", 4)
# A history page's reads are done by the event loop itself over the native
# protocol (messaging.backends.cql_reads), the driver keeping everything else;
# off: every read goes through the driver.
CHAT_CASSANDRA_LEAN_READS = env_bool("CHAT_CASSANDRA_LEAN_READS", True)
# Create missing tables on first use; production may turn this off and run chat_setup.
CHAT_CASSANDRA_AUTO_SCHEMA = env_bool("CHAT_CASSANDRA_AUTO_SCHEMA", True)
# "class" plus options, e.g. CHAT_CASSANDRA_REPLICATION_CLASS=NetworkTopologyStrategy
# CHAT_CASSANDRA_REPLICATION=dc1=3,dc2=3 in production.
CHAT_CASSANDRA_REPLICATION = {
    "class": env_str("CHAT_CASSANDRA_REPLICATION_CLASS", "SimpleStrategy"),
    **{
        key: value
        for key, value in (
            item.split("=", 1) for item in env_list("CHAT_CASSANDRA_REPLICATION", ["replication_factor=1"])
        )
    },
}

if CHAT_MODE == "full":
    CHAT_BACKENDS = {
        "message_store": "messaging.backends.cassandra_store.CassandraMessageStore",
        "message_bus": "messaging.backends.kafka_bus.KafkaMessageBus",
        "claim_registry": "messaging.backends.claims.RedisClaimRegistry",
        "session_registry": "presence.redis_registry.RedisSessionRegistry",
        "server_directory": "presence.redis_registry.RedisServerDirectory",
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chatsite.channel_layer.OneTripRedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": CHAT_REDIS_URL,
                        "max_connections": CHAT_REDIS_MAX_CONNECTIONS,
                        # channels-redis blocks 5 s in BRPOP/BZPOPMIN on an idle
                        # channel; redis-py 8's default 5 s socket timeout
                        # would race it and fail idle reads.
                        "socket_timeout": 30,
                    }
                ],
                "capacity": CHAT_CHANNEL_CAPACITY,
                "prefix": f"{CHAT_REDIS_PREFIX}:layer:",
            },
        }
    }
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", CHAT_REDIS_URL)
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CHAT_BACKENDS = {
        "message_store": "messaging.backends.orm_store.OrmMessageStore",
        "message_bus": "messaging.backends.inprocess_bus.InProcessMessageBus",
        "claim_registry": "messaging.backends.claims.InProcessClaimRegistry",
        "session_registry": "presence.registry.InProcessSessionRegistry",
        "server_directory": "presence.directory.SingleServerDirectory",
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHAT_CHANNEL_CAPACITY},
        }
    }
    # Tasks run inline: no broker on the embedded default.
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True

CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ROUTES = {"messaging.push_notify": {"queue": "notifications"}}
# Messages the in-process bus holds before it refuses more (backpressure).
CHAT_BUS_QUEUE_SIZE = env_int("CHAT_BUS_QUEUE_SIZE", 10000)
# Threads that run blocking I/O (database, Cassandra) for one process's event loop.
CHAT_IO_THREADS = env_int("CHAT_IO_THREADS", 32)
# Server processes take what start-up made out of Python's cyclic collections,
# and collect young objects every this many allocations (0: Python's 700);
# see chatsite/gc_tuning.py.
CHAT_GC_FREEZE = env_bool("CHAT_GC_FREEZE", True)
CHAT_GC_GEN0_THRESHOLD = env_int("CHAT_GC_GEN0_THRESHOLD", SERVING_YOUNG_THRESHOLD)
