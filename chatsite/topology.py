"""The processes of the full pipeline, started and stopped as one.

Used by ``manage.py run_full`` (``make run-full``) and by the test suite, so
the topology the tests exercise is the one people run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A port p with p+1 free too (the full topology's two chat servers)."""
    for _ in range(100):
        port = free_port()
        if port_is_free(port + 1):
            return port
    raise RuntimeError("no two adjacent free ports")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None


def full_topology(
    *, host: str, port: int, chat_servers: int = 2, dispatchers: int = 2, notifiers: int = 1
) -> list[ProcessSpec]:
    """Chat servers on port, port+1, ...; dispatcher and notification workers."""
    python = sys.executable
    specs = [
        ProcessSpec(
            name=f"chatserver-{index + 1}",
            argv=[python, "manage.py", "chatserver", "--host", host, "--port", str(port + index)],
            env={"CHAT_SERVER_ID": f"{socket.gethostname()}-chat-{port + index}"},
            port=port + index,
        )
        for index in range(chat_servers)
    ]
    celery = [
        python,
        "-m",
        "celery",
        "-A",
        "chatsite",
        "worker",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--pool",
        "solo",
    ]
    specs += [
        ProcessSpec(
            name=f"dispatcher-{index + 1}",
            # Dispatchers take no Celery tasks: their work comes from Kafka through the bootstep.
            argv=[*celery, "--kafka-dispatcher", "-Q", "dispatcher-control", "-n", f"dispatcher{index + 1}@%h"],
            env={"CHAT_SERVER_ID": f"{socket.gethostname()}-dispatcher-{index + 1}"},
        )
        for index in range(dispatchers)
    ]
    specs += [
        ProcessSpec(
            name=f"notifier-{index + 1}", argv=[*celery, "-Q", "notifications", "-n", f"notifier{index + 1}@%h"]
        )
        for index in range(notifiers)
    ]
    return specs


class Topology:
    """Runs a list of processes; output goes to one log file each and, when
    ``echo`` is given, also to that stream with a name prefix."""

    def __init__(
        self, specs: list[ProcessSpec], *, env: Mapping[str, str], log_dir: Path, echo: IO[str] | None = None
    ) -> None:
        self.specs = specs
        self.env = dict(env)
        self.log_dir = log_dir
        self.echo = echo
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            self._spawn(spec)

    def start_one(self, name: str) -> None:
        """Start one process again (after ``stop_one``)."""
        self._spawn(next(spec for spec in self.specs if spec.name == name))

    def stop_one(self, name: str, timeout: float = 20.0) -> None:
        """Stop one process the way ``stop`` stops them all (SIGTERM, then SIGKILL)."""
        self._terminate([self.processes.pop(name)], timeout)

    def kill_one(self, name: str) -> None:
        """Kill one process and its children at once (SIGKILL), as a crash
        would: no shutdown code runs, nothing is committed or deregistered."""
        process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def _spawn(self, spec: ProcessSpec) -> None:
        process = subprocess.Popen(
            spec.argv,
            cwd=REPO,
            env={**os.environ, **self.env, **spec.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[spec.name] = process
        threading.Thread(target=self._pump, args=(spec.name, process), daemon=True).start()

    def _pump(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with self.log_path(name).open("ab") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if self.echo is not None:
                    self.echo.write(f"{name:>13} | {line.decode(errors='replace')}")
                    self.echo.flush()

    def wait_for_ports(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for spec in self.specs:
            if spec.port is None:
                continue
            while True:
                self.check_alive()
                try:
                    with socket.create_connection(("127.0.0.1", spec.port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{spec.name} did not listen on {spec.port}: {self.tail(spec.name)}"
                        ) from None
                    time.sleep(0.2)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.log_path(name)
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        self._terminate(list(self.processes.values()), timeout)

    def _terminate(self, processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for_consumer_group(*, bootstrap_servers: list[str], group: str, members: int, timeout: float = 60.0) -> None:
    """Block until the group has ``members`` members that hold partitions."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="topology-probe")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                description = admin.describe_groups([group])[group]
            except KafkaError as exc:
                # A fresh broker creates its group coordinator (__consumer_offsets) on first use.
                if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
                continue
            assigned = [member for member in description["members"] if member.get("member_assignment")]
            if description["group_state"] == "Stable" and len(assigned) >= members:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumer group {group} has {len(assigned)} of {members} members assigned")
            time.sleep(0.3)
    finally:
        admin.close()
