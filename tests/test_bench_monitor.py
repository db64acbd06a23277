"""The harness's process monitor: CPU of a watched tree includes its children,
and each process's timer slack is reported."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.monitor import ProcessMonitor

# A parent that starts a child; the child waits (so the monitor's first sample
# comes first), burns 0.6 s of CPU, says so in a file, and sleeps.
CHILD = """
import sys, time
time.sleep(0.5)
end = time.process_time() + 0.6
while time.process_time() < end:
    pass
open(sys.argv[1], "w").close()
time.sleep(60)
"""
PARENT = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
time.sleep(60)
"""


def test_a_watched_tree_counts_its_childrens_cpu_and_a_root_alone_does_not(tmp_path: Path) -> None:
    burnt = tmp_path / "burnt"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(burnt)])
    try:
        monitor = ProcessMonitor(interval=0.1)
        monitor.watch("servers", "tree", parent.pid)
        monitor.watch("servers", "root", parent.pid, tree=False)
        monitor.start()
        deadline = time.monotonic() + 30
        while not burnt.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        report = monitor.stop()["processes"]
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()
    assert burnt.exists()
    assert report["tree"]["cpu_s"] >= 0.55
    assert report["root"]["cpu_s"] < 0.3


def test_the_monitor_reports_the_timer_slack_a_process_was_started_with() -> None:
    # The shell sets its own slack, then becomes the sleeping process.
    slow = subprocess.Popen(["bash", "-c", "echo 700000 > /proc/self/timerslack_ns; exec sleep 60"])
    default = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{slow.pid}/cmdline").read_bytes()[:5] != b"sleep" and time.monotonic() < deadline:
            time.sleep(0.02)
        monitor = ProcessMonitor(interval=0.1)
        monitor.watch("infra", "slow", slow.pid)
        monitor.watch("infra", "default", default.pid)
        monitor.start()
        report = monitor.stop()["processes"]
    finally:
        for process in (slow, default):
            process.kill()
            process.wait()
    assert report["slow"]["timer_slack_us"] == 700.0
    assert report["default"]["timer_slack_us"] != 700.0
