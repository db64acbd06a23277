"""The service scripts' explanation of a failed start (scripts/services/lib.sh).

An operator reads this explanation first, so it must name the real cause and
must not blame memory for a start that failed for another reason.
"""

from __future__ import annotations

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


def _explain(tmp_path: Path, *, written_before_start: str, written_by_start: str) -> str:
    """Run ``explain_failure`` over a log that held ``written_before_start``
    when the start began; return what it printed for the operator."""
    log = tmp_path / "system.log"
    log.write_text(written_before_start)
    script = (
        f'source "{LIB}"\n'
        'SVC_DATA="$CHAT_VAR_DIR/services/cassandra/data"\n'
        f'mark_logs "{log}"\n'
        f'printf \'%s\' "$START_OUTPUT" >> "{log}"\n'
        f'explain_failure 1 "{log}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": "/usr/bin:/bin", "CHAT_VAR_DIR": str(tmp_path / "var"), "START_OUTPUT": written_by_start},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
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
