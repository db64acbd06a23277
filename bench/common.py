"""Small helpers shared by the harness, its targets and its worker processes."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import time
from pathlib import Path

# Re-exported: the harness and its targets import them from here.
from chatsite.topology import free_port as free_port
from chatsite.topology import free_port_pair as free_port_pair
from chatsite.topology import port_is_free as port_is_free

REPO = Path(__file__).resolve().parent.parent


def raise_nofile_limit() -> tuple[int, int]:
    """Lift the soft open-files limit to the hard one.

    Ten thousand sockets need more than the usual 1,024 descriptors; processes
    started from here inherit the raised limit, so the servers get it too.
    The hard limit cannot be raised without privileges a container may lack.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1_048_576
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def port_answers(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening:\n{tail(log)}")
        if port_answers(port, timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} within {timeout:.0f}s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def python_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a child Python: ours plus ``extra``, with the repo importable."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
