"""The service scripts (scripts/services/lib.sh): the explanation of a failed
start, and the timer slack the servers start with.

An operator reads a failed start's explanation first, so it must name the real
cause and must not blame memory for a start that failed for another reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "scripts" / "services" / "lib.sh"

# What Cassandra logs on every start, failed or not: its JVM arguments.
JVM_ARGUMENTS_LINE = (
    "INFO  [main] CassandraDaemon.java:619 - JVM Arguments: [-Xms1G, -Xmx1G,"
    " -XX:+ExitOnOutOfMemoryError, -XX:+UseG1GC]\n"
)


def _bash(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a bash that sourced lib.sh, with ``env`` beside a minimal environment."""
    return subprocess.run(
        ["bash", "-c", f'source "{LIB}"\n{script}'],
        env={"PATH": "/usr/bin:/bin", "CHAT_VAR_DIR": str(tmp_path / "var"), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def _explain(tmp_path: Path, *, written_before_start: str, written_by_start: str) -> str:
    """Run ``explain_failure`` over a log that held ``written_before_start``
    when the start began; return what it printed for the operator."""
    log = tmp_path / "system.log"
    log.write_text(written_before_start)
    script = (
        'SVC_DATA="$CHAT_VAR_DIR/services/cassandra/data"\n'
        f'mark_logs "{log}"\n'
        f'printf \'%s\' "$START_OUTPUT" >> "{log}"\n'
        f'explain_failure 1 "{log}"\n'
    )
    done = _bash(script, tmp_path, START_OUTPUT=written_by_start)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_start_that_failed_on_unreadable_sstables_is_not_blamed_on_memory(tmp_path: Path) -> None:
    said = _explain(
        tmp_path,
        written_before_start="",
        written_by_start=JVM_ARGUMENTS_LINE
        + "ERROR [main] CassandraDaemon.java:887 - Detected unreadable sstables /data/oa-526-big-Data.db\n",
    )
    assert "out of memory" not in said
    assert "ran out of heap" not in said
    assert "sstables this configuration cannot read" in said
    assert str(tmp_path / "var" / "services" / "cassandra" / "data") in said


@pytest.mark.parametrize(
    ("thrown", "explanation"),
    [
        # A heap exhausted during the start is reported as such.
        ("Terminating due to java.lang.OutOfMemoryError: Java heap space", "the JVM ran out of heap"),
        # Memory failures of other kinds are reported as out of memory.
        ("java.lang.OutOfMemoryError: unable to create native thread", "out of memory"),
    ],
)
def test_a_memory_failure_during_the_start_is_named(tmp_path: Path, thrown: str, explanation: str) -> None:
    said = _explain(tmp_path, written_before_start="", written_by_start=JVM_ARGUMENTS_LINE + thrown + "\n")
    assert explanation in said


def test_only_what_this_start_wrote_is_read(tmp_path: Path) -> None:
    said = _explain(
        tmp_path,
        written_before_start="Terminating due to java.lang.OutOfMemoryError: Java heap space\n",
        written_by_start=JVM_ARGUMENTS_LINE + "ERROR [main] - Address already in use\n",
    )
    assert "heap" not in said
    assert "out of memory" not in said
    assert "a port is already in use" in said


def test_a_server_started_after_set_timer_slack_runs_with_that_slack(tmp_path: Path) -> None:
    # The child reads its own slack: what the kernel applies to its timed sleeps.
    done = _bash(
        'ns="$(timer_slack_ns CASSANDRA_TIMER_SLACK_US 730)"\n'
        '(set_timer_slack "$ns"; exec cat /proc/self/timerslack_ns)\n'
        "cat /proc/self/timerslack_ns\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    child, shell_after = done.stdout.split()
    assert int(child) == 730_000
    # Only the subshell that started the server changed; the script's own shell did not.
    assert int(shell_after) != 730_000


def test_a_timer_slack_of_zero_leaves_the_kernels_default(tmp_path: Path) -> None:
    done = _bash(
        "before=$(cat /proc/self/timerslack_ns)\n"
        'ns="$(timer_slack_ns CASSANDRA_TIMER_SLACK_US 0)"\n'
        'after=$(set_timer_slack "$ns"; cat /proc/self/timerslack_ns)\n'
        'echo "$ns $before $after"\n',
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    ns, before, after = done.stdout.split()
    assert ns == "0"
    assert after == before


def test_a_timer_slack_with_a_leading_zero_is_read_as_decimal(tmp_path: Path) -> None:
    done = _bash("timer_slack_ns CASSANDRA_TIMER_SLACK_US 0900", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "900000"


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("abc", "must be a whole number of microseconds"),
        ("-5", "must be a whole number of microseconds"),
        ("1.5", "must be a whole number of microseconds"),
        ("2000000", "is at most 1000000"),
        ("99999999999999999999999", "is at most 1000000"),
    ],
)
def test_a_bad_timer_slack_stops_the_start_with_its_name(tmp_path: Path, value: str, complaint: str) -> None:
    done = _bash(f'timer_slack_ns CASSANDRA_TIMER_SLACK_US "{value}"', tmp_path)
    assert done.returncode != 0
    assert "CASSANDRA_TIMER_SLACK_US" in done.stderr
    assert complaint in done.stderr
    assert done.stdout == ""


def test_the_cassandra_these_scripts_started_runs_with_the_configured_timer_slack() -> None:
    expected_us = int(os.environ.get("CASSANDRA_TIMER_SLACK_US", "500"))
    if not expected_us:
        pytest.skip("CASSANDRA_TIMER_SLACK_US=0 keeps the kernel's default")
    var_dir = Path(os.environ.get("CHAT_VAR_DIR", REPO / "var"))
    pidfile = var_dir / "services" / "cassandra" / "run" / "cassandra.pid"
    if not pidfile.exists():
        pytest.skip("no Cassandra started by scripts/services/cassandra.sh on this machine")
    pid = pidfile.read_text().strip()
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        thread_ids = [task.name for task in Path(f"/proc/{pid}/task").iterdir()]
    except FileNotFoundError:
        pytest.skip("the Cassandra of scripts/services/cassandra.sh is not running")
    assert b"-Dchat.service=cassandra" in command_line
    slacks: set[int] = set()
    for thread_id in thread_ids:
        try:
            slacks.add(int(Path(f"/proc/{thread_id}/timerslack_ns").read_text()))
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    assert slacks == {expected_us * 1000}, (
        f"Cassandra (pid {pid}) runs with a timer slack of {sorted(slacks)} ns, not"
        f" CASSANDRA_TIMER_SLACK_US={expected_us}: it was started before that setting;"
        " restart it with scripts/services/cassandra.sh restart"
    )
