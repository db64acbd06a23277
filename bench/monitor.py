"""CPU seconds and RSS of the processes under test, sampled with psutil."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psutil

MIB = 1024 * 1024


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _children_by_parent() -> dict[int, list[int]]:
    """Every process's children, from one pass over /proc.

    psutil's ``children()`` makes such a pass on every call (and
    ``process_iter`` costs five times more), so asking it for each watched
    tree every half second cost the harness a few percent of a core, taken
    from the servers it measures."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue  # it exited meanwhile
        # The command name may hold spaces and parentheses; the fields after it
        # start at the last ')': state, then the parent's pid.
        children[int(stat.rsplit(b")", 1)[1].split()[1])].append(int(entry.name))
    return children


def _tree_pids(pid: int, children: dict[int, list[int]]) -> list[int]:
    pids = [pid]
    for parent in pids:  # grows as it goes: a breadth-first walk
        pids.extend(children.get(parent, ()))
    return pids


def rss_of(pid: int) -> int:
    """Resident set size of one process (not its children), 0 if gone."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def high_water_rss(pid: int) -> int | None:
    """The kernel's peak RSS of the process since it started (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def timer_slack_us(pid: int) -> float | None:
    """How late the kernel may fire the process's timed sleeps (its main
    thread's timer slack), or None where Linux does not say."""
    try:
        with open(f"/proc/{pid}/timerslack_ns") as slack:
            return int(slack.read()) / 1000
    except (OSError, ValueError):
        return None


@dataclass
class _Watched:
    label: str
    pid: int
    tree: bool
    rss_root_only: bool
    cpu_start: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)
    rss_start: int = 0
    rss_last: int = 0
    rss_peak: int = 0
    fds_peak: int = 0


class ProcessMonitor:
    """Watches labelled processes (with their children when ``tree``) from
    ``start()`` to ``stop()``: CPU seconds used in between, RSS peak and ends.

    Sampling every half second misses spikes shorter than that, so the report
    also carries the kernel's high-water mark for each root process.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.watched: list[_Watched] = []
        # psutil handles, one per pid, kept from sample to sample.
        self._processes: dict[int, psutil.Process] = {}
        self.groups: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.machine_start: Any = None
        self.started_at = 0.0
        self.stopped_at = 0.0

    def watch(self, group: str, label: str, pid: int, *, tree: bool = True, rss_root_only: bool = False) -> None:
        """``rss_root_only``: children's CPU counts, their RSS does not (PostgreSQL's
        backends each map the shared buffers, so a sum would count them many times)."""
        self.watched.append(_Watched(label=label, pid=pid, tree=tree, rss_root_only=rss_root_only))
        self.groups[label] = group

    def _process(self, pid: int) -> psutil.Process | None:
        process = self._processes.get(pid)
        if process is None:
            try:
                process = self._processes[pid] = psutil.Process(pid)
            except psutil.Error:
                return None
        return process

    def _sample(self, first: bool = False) -> None:
        children = _children_by_parent() if any(item.tree for item in self.watched) else {}
        for item in self.watched:
            pids = _tree_pids(item.pid, children) if item.tree else [item.pid]
            processes = [process for pid in pids if (process := self._process(pid)) is not None]
            rss = 0
            fds = 0
            for process in processes:
                with contextlib.suppress(psutil.Error), process.oneshot():
                    cpu = _cpu(process)
                    # A child first seen now started inside the window: count it from zero.
                    if first:
                        item.cpu_start.setdefault(process.pid, cpu)
                    else:
                        item.cpu_start.setdefault(process.pid, 0.0)
                    item.cpu_last[process.pid] = cpu
                    if process.pid == item.pid or not item.rss_root_only:
                        rss += int(process.memory_info().rss)
                    fds += process.num_fds()
            if processes:
                if first:
                    item.rss_start = rss
                item.rss_last = rss
                item.rss_peak = max(item.rss_peak, rss)
                item.fds_peak = max(item.fds_peak, fds)

    def start(self) -> None:
        self.machine_start = psutil.cpu_times()
        self.started_at = time.monotonic()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self.stopped_at = time.monotonic()
        machine_end = psutil.cpu_times()
        elapsed = self.stopped_at - self.started_at
        processes: dict[str, Any] = {}
        for item in self.watched:
            cpu = sum(item.cpu_last[pid] - item.cpu_start.get(pid, 0.0) for pid in item.cpu_last)
            hwm = high_water_rss(item.pid)
            processes[item.label] = {
                "group": self.groups[item.label],
                "pid": item.pid,
                "cpu_s": round(cpu, 2),
                "cpu_util": round(cpu / elapsed, 3) if elapsed else None,
                "rss_start_mb": round(item.rss_start / MIB, 1),
                "rss_end_mb": round(item.rss_last / MIB, 1),
                "rss_peak_mb": round(item.rss_peak / MIB, 1),
                "rss_high_water_mb": round(hwm / MIB, 1) if hwm is not None else None,
                "fds_peak": item.fds_peak,
                "timer_slack_us": timer_slack_us(item.pid),
                "with_children": item.tree,
                "rss_of_root_only": item.rss_root_only,
            }
        busy_start = _busy(self.machine_start)
        busy_end = _busy(machine_end)
        return {
            "seconds": round(elapsed, 2),
            "processes": processes,
            "machine_busy_cpu_s": round(busy_end - busy_start, 2),
            "machine_cores": psutil.cpu_count(),
        }


def _busy(times: Any) -> float:
    idle = float(getattr(times, "idle", 0.0)) + float(getattr(times, "iowait", 0.0))
    total = sum(float(value) for value in times)
    # guest time is already counted in user time on Linux.
    total -= float(getattr(times, "guest", 0.0)) + float(getattr(times, "guest_nice", 0.0))
    return total - idle


def pids_listening_on(ports: list[int]) -> dict[int, int]:
    """port -> pid of the process listening on it on this machine."""
    found: dict[int, int] = {}
    with contextlib.suppress(psutil.Error):
        for connection in psutil.net_connections(kind="tcp"):
            listening = connection.status == psutil.CONN_LISTEN and connection.laddr
            if listening and connection.laddr.port in ports and connection.pid is not None:
                found.setdefault(connection.laddr.port, connection.pid)
    return found
