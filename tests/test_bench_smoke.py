"""The benchmark harness in its quick mode: every target, every scenario, tiny
sizes. Proves the harness runs end to end and reports every figure; the
figures themselves are too small to mean anything."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.scenarios import DEFAULT_MATRIX
from bench.targets import ensure_services

REPO = Path(__file__).resolve().parent.parent
TARGETS = ["raw", "channels", "embedded", "full"]
LATENCY_FIELDS = ["p50_ms", "p99_ms", "p999_ms"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ensure_services(["redis", "postgres", "kafka", "cassandra"])
    out = tmp_path_factory.mktemp("bench-results")
    command = [sys.executable, "-m", "bench.run", "--quick", "--strict", "--targets", ",".join(TARGETS)]
    done = subprocess.run([*command, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    (path,) = out.glob("*.json")
    loaded: dict[str, Any] = json.loads(path.read_text())
    loaded["_stdout"] = done.stdout
    return loaded


def runs_of(results: dict[str, Any], scenario: str) -> dict[str, dict[str, Any]]:
    return {run["target"]: run for run in results["runs"] if run["scenario"] == scenario}


def test_every_scenario_ran_on_its_targets(results):
    for scenario, targets in DEFAULT_MATRIX.items():
        runs = runs_of(results, scenario)
        assert sorted(runs) == sorted(targets), scenario
        for target, run in runs.items():
            assert run["status"] == "ok", (scenario, target, run.get("error"), run.get("server_died"))


@pytest.mark.parametrize("scenario", ["fanout_flood", "fanout_rate", "mixed"])
def test_deliveries_are_measured_and_none_lost(results, scenario):
    for target, run in runs_of(results, scenario).items():
        figures = run["figures"]
        assert figures["deliveries"] > 0, target
        assert figures["deliveries_per_s"] > 0, target
        if target == "channels" and scenario == "fanout_flood":
            # The tutorial design drops what overflows channels-redis's
            # per-channel capacity (bench/README.md); a slow first run can fill
            # a channel even in this tiny flood. Drops must be counted as lost.
            assert figures["deliveries"] + figures["lost"] == figures["deliveries_expected"], (target, figures)
        else:
            assert figures["lost"] == 0, (target, figures)
            assert figures["deliveries"] == figures["deliveries_expected"], target
        assert figures["duplicates"] == 0, target
        for field in LATENCY_FIELDS:
            assert figures["latency"][field] is not None, (target, field)
        assert figures["loadgen"]["cpu_s_window"] >= 0
        # A tiny run can use under 10 ms of server CPU, which rounds to 0.
        assert run["server_cpu_s"] >= 0, target
        for label, usage in run["usage"]["processes"].items():
            assert usage["cpu_s"] is not None and usage["rss_peak_mb"] > 0, (target, label)


def test_mixed_load_carries_typing_heartbeats_and_history(results):
    for target, run in runs_of(results, "mixed").items():
        figures = run["figures"]
        assert figures["heartbeats_sent"] > 0, target
        assert figures["typing_sent"] > 0, target
        assert figures["frames_received"].get("typing", 0) > 0, target
        if target in ("embedded", "full"):
            assert figures["history"]["reads_ok"] > 0, target
            assert figures["history"]["wrong_page_size"] == 0, target


def test_idle_connections_are_held_and_weighed(results):
    for target, run in runs_of(results, "idle").items():
        idle = run["idle"]
        assert idle["held"] == idle["requested"] > 0, target
        assert idle["rss_per_connection_kb"] is not None, target
        assert run["figures"]["heartbeats_sent"] > 0, target


def test_history_pages_have_latency_percentiles(results):
    for target, run in runs_of(results, "history").items():
        page = run["figures"]["history"]
        assert page["reads_ok"] > 0, target
        assert page["wrong_page_size"] == 0, target
        assert page["status"] == {"200": page["reads_ok"]}, target
        for field in LATENCY_FIELDS:
            assert page[field] is not None, (target, field)
        assert run["setup"]["history_fill"]["messages"] == run["params"]["messages"] > 0
        assert run["history_single_reader"]["reads_ok"] > 0, target


def test_ratios_and_table_are_reported(results):
    pairs = {(row["scenario"], row["pair"]) for row in results["ratios"]}
    assert ("fanout_flood", "full/channels") in pairs
    assert ("fanout_flood", "embedded/raw") in pairs
    assert ("idle", "embedded/raw") in pairs
    assert ("history", "full/embedded") in pairs
    assert "deliv/s" in results["_stdout"] and "Ratios" in results["_stdout"]


def test_a_run_stopped_with_sigterm_stops_its_servers_and_writes_what_it_has(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.run", "--quick", "--targets", "embedded", "--scenarios", "fanout_flood"]
    run = subprocess.Popen(
        [*command, "--duration", "120", "--out", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        servers: list[psutil.Process] = []
        while not servers and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.2)
            with contextlib.suppress(psutil.Error):
                servers = [
                    child
                    for child in psutil.Process(run.pid).children(recursive=True)
                    if "daphne" in " ".join(child.cmdline())
                ]
        assert servers, "the embedded server never started"
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "SIGTERM: stopping the servers and cleaning up" in stderr
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert alive == []
    (path,) = tmp_path.glob("*.json")
    assert json.loads(path.read_text())["meta"]["wall_s"] > 0
