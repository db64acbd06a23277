"""Server processes run on the event loop CHAT_EVENT_LOOP names
(chatsite/event_loop.py): uvloop by default, the standard library's on
request, and a clear error for anything else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatsite.topology import free_port
from tests.conftest import start_chat_server, wait_for_port
from tests.helpers import LiveServer

REPO = Path(__file__).resolve().parent.parent


def served_line(log: Path, timeout: float = 10.0) -> str:
    """The chat server's start-up line, once it is in the log."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in log.read_text().splitlines() if line.startswith("chat server ")]
        if lines or time.monotonic() > deadline:
            assert lines, log.read_text()[-3000:]
            return lines[0]
        time.sleep(0.1)


def test_the_chat_server_make_run_starts_runs_on_uvloop(live_server_embedded: LiveServer) -> None:
    assert served_line(live_server_embedded.log).endswith("(embedded mode, event loop: uvloop)")


def test_the_standard_loop_can_be_chosen(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "chatserver.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "CHAT_MODE": "embedded",
        "CHAT_VAR_DIR": str(tmp_path),
        "CHAT_SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "CHAT_EVENT_LOOP": "asyncio",
    }
    server = start_chat_server(port=port, env=env, log=log)
    try:
        wait_for_port(port, server, log)
        assert served_line(log).endswith("(embedded mode, event loop: asyncio)")
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("value", ["tokio", "uvloop2"])
def test_an_unknown_loop_is_refused_before_anything_starts(value: str) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings", "CHAT_EVENT_LOOP": value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: CHAT_EVENT_LOOP must be one of uvloop, asyncio, not {value!r}"


def test_the_dispatcher_loop_follows_the_setting() -> None:
    probe = "\n".join(
        [
            "from chatsite.event_loop import loop_kind, new_event_loop",
            "loop = new_event_loop()",
            "print(loop_kind(loop))",
            "loop.close()",
        ]
    )
    kinds = {}
    for value in ("", "uvloop", "asyncio", " AsyncIO "):
        done = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=REPO,
            env={**os.environ, "CHAT_EVENT_LOOP": value},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        kinds[value] = done.stdout.strip()
    assert kinds == {"": "uvloop", "uvloop": "uvloop", "asyncio": "asyncio", " AsyncIO ": "asyncio"}


def test_a_dispatcher_refuses_an_unknown_loop_before_its_thread_starts() -> None:
    probe = "\n".join(
        [
            "import django",
            "django.setup()",
            "from chatsite.event_loop import EventLoopConfigError",
            "from messaging.kafka_dispatcher import KafkaDispatcher",
            "dispatcher = KafkaDispatcher()",
            "try:",
            "    dispatcher.start()",
            "except EventLoopConfigError as exc:",
            "    print('refused:', exc, '| thread:', dispatcher.info()['running'])",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings", "CHAT_EVENT_LOOP": "tokio"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == (
        "refused: CHAT_EVENT_LOOP must be one of uvloop, asyncio, not 'tokio' | thread: False"
    )
