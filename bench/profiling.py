"""Optional sampling profiles of the server processes with py-spy (``--profile``).

py-spy attaches from outside, so the servers run unmodified; it writes
collapsed stacks (``--format raw``), which flame graph tools read, and the
summary here keeps the functions that were on CPU most often.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


class Profiler:
    def __init__(self, directory: Path, rate: int = 49) -> None:
        self.directory = directory
        self.rate = rate
        self.running: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        self.executable = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

    def begin(self, name: str, pids: dict[str, int]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for label, pid in pids.items():
            output = self.directory / f"{name}-{label}.txt"
            command = [
                self.executable,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--output",
                str(output),
                "--nonblocking",
            ]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.running.append((label, output, process))

    def end(self) -> dict[str, Any]:
        summaries: dict[str, Any] = {}
        for label, output, process in self.running:
            # SIGINT makes py-spy write what it sampled and exit.
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            summaries[label] = {"file": str(output), **summarize(output)}
        self.running = []
        return summaries


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from collapsed stacks."""
    if not path.exists():
        return {"samples": 0}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "self": [[frame, round(count / total, 3)] for frame, count in own.most_common(top)],
        "inclusive": [[frame, round(count / total, 3)] for frame, count in inclusive.most_common(top * 2)],
    }


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``: lines split one function."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    parts = file.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if file else name
