"""Server processes take their start-up objects out of Python's cyclic
collections (chatsite/gc_tuning.py): the ASGI entry point that daphne and
the chat servers load, and every Celery worker once it is ready."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LOAD_ASGI = "import chatsite.asgi"
READY_WORKER = "\n".join(
    ["from chatsite.celery import app", "from celery.signals import worker_ready", "worker_ready.send(sender=None)"]
)
REPORT = "import gc, json\nprint(json.dumps({'frozen': gc.get_freeze_count(), 'threshold': gc.get_threshold()}))"


def gc_state_after(startup: str, **env: str) -> dict[str, object]:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings", "CHAT_MODE": "embedded", **env}
    done = subprocess.run(
        [sys.executable, "-c", f"{startup}\n{REPORT}"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return state


def test_the_asgi_entry_point_freezes_start_up_and_collects_young_objects_less_often() -> None:
    state = gc_state_after(LOAD_ASGI)
    # Django, Channels and the project's modules: tens of thousands of objects.
    assert isinstance(state["frozen"], int) and state["frozen"] > 10_000
    assert state["threshold"] == [10_000, 10, 10]


def test_a_ready_celery_worker_is_tuned_too() -> None:
    state = gc_state_after(READY_WORKER, CHAT_GC_GEN0_THRESHOLD="5000")
    assert isinstance(state["frozen"], int) and state["frozen"] > 10_000
    assert state["threshold"] == [5_000, 10, 10]


def test_the_tuning_can_be_switched_off() -> None:
    state = gc_state_after(LOAD_ASGI, CHAT_GC_FREEZE="0", CHAT_GC_GEN0_THRESHOLD="0")
    assert state == {"frozen": 0, "threshold": [700, 10, 10]}
