"""Settings of the tutorial baseline: Channels and daphne, nothing else.

``BENCH_CHANNELS_REDIS_URL`` picks the Redis database and
``BENCH_CHANNELS_PREFIX`` keeps a run's keys apart from everything else there.
"""

from __future__ import annotations

import os

SECRET_KEY = "bench-channels-tutorial-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["daphne", "channels"]
ROOT_URLCONF = "bench.baselines.channels_tutorial.urls"
ASGI_APPLICATION = "bench.baselines.channels_tutorial.asgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
_host: dict[str, object] = {
    "address": os.environ.get("BENCH_CHANNELS_REDIS_URL", "redis://127.0.0.1:6379/11"),
    # redis-py 8's default pool raises "Too many connections" at about 100
    # sockets, well below a few hundred concurrent group_sends.
    "max_connections": int(os.environ.get("BENCH_CHANNELS_MAX_CONNECTIONS", "2000")),
}
# channels-redis blocks up to 5 s in BZPOPMIN on an idle channel, and redis-py
# 8's 5 s default socket timeout races it: the consumer then dies with
# "Timeout reading from" (close code 1011). Deployment settings, not the
# design, so the baseline gets a longer one; an empty value keeps the default.
_socket_timeout = os.environ.get("BENCH_CHANNELS_SOCKET_TIMEOUT", "30")
if _socket_timeout:
    _host["socket_timeout"] = float(_socket_timeout)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [_host], "prefix": os.environ.get("BENCH_CHANNELS_PREFIX", "benchtutorial")},
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
