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

from tests.helpers import ApiClient, LiveServer

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@pytest.fixture(scope="session")
def live_server_embedded() -> Iterator[LiveServer]:
    """A real daphne serving the embedded default on a free port."""
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
    log = workdir / "daphne.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process, log)
        yield LiveServer(base_url=f"http://127.0.0.1:{port}", log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def api(live_server_embedded: LiveServer) -> ApiClient:
    return ApiClient(live_server_embedded.base_url)
