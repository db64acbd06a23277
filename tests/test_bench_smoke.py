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

from bench.scenarios import DEFAULT_MATRIX, curve_summary, next_curve_share
from bench.targets import ensure_services

REPO = Path(__file__).resolve().parent.parent
TARGETS = ["raw", "channels", "embedded", "full"]
LATENCY_FIELDS = ["p50_ms", "p99_ms", "p999_ms"]
CURVE_LIMIT_MS = 1.0


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ensure_services(["redis", "postgres", "kafka", "cassandra"])
    out = tmp_path_factory.mktemp("bench-results")
    command = [sys.executable, "-m", "bench.run", "--quick", "--strict", "--targets", ",".join(TARGETS)]
    # A p99 limit no run of the full pipeline meets, so fanout_curve also
    # places a share by halving the gap below its lowest one.
    command += ["--curve-p99-ms", str(CURVE_LIMIT_MS)]
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


def test_the_latency_curve_runs_each_share_of_the_flood(results):
    for target, run in runs_of(results, "fanout_curve").items():
        flood = runs_of(results, "fanout_flood")[target]["figures"]["deliveries_per_s"]
        shares = run["params"]["fractions"]
        assert len(shares) >= 2 and shares == sorted(shares), target
        grid = [point for point in run["curve"] if not point["refinement"]]
        assert [point["fraction_of_saturation"] for point in grid] == pytest.approx(shares, rel=0.01)
        in_order = [point["fraction_of_saturation"] for point in run["curve"]]
        assert in_order == sorted(in_order), target
        assert sorted(point["measured"] for point in run["curve"]) == list(range(len(run["curve"])))
        # The grid first, then each refinement halfway into the gap it was placed in.
        refined = sorted((p for p in run["curve"] if p["refinement"]), key=lambda p: p["measured"])
        assert run["params"]["p99_limit_ms"] == CURVE_LIMIT_MS
        assert 1 <= len(refined) <= run["params"]["refine"], target
        assert refined[0]["fraction_of_saturation"] == pytest.approx(shares[0] / 2, abs=0.002), target
        for point in refined:
            before = [p for p in run["curve"] if p["measured"] < point["measured"]]
            assert next_curve_share(before, run["params"]["p99_limit_ms"]) == pytest.approx(
                point["fraction_of_saturation"], abs=0.002
            ), (target, point)
        if len(refined) < run["params"]["refine"]:
            assert next_curve_share(run["curve"], run["params"]["p99_limit_ms"]) is None, target
        for point in run["curve"]:
            assert point["offered_deliveries_per_s"] == pytest.approx(point["fraction_of_saturation"] * flood, rel=0.01)
            figures = point["run"]["figures"]
            # Every point sends its own messages: ids reused from an earlier
            # point would be acked as retries and never delivered.
            assert figures["deliveries"] == figures["deliveries_expected"] > 0, (target, point)
            assert point["lost"] == 0 and point["duplicates"] == 0, (target, point)
            for field in LATENCY_FIELDS:
                assert point[field] is not None, (target, field)
            assert point["system_cpu_per_1k_deliveries_s"] > 0, (target, point)
            assert point["cost_over_flood"] > 0, (target, point)
        summary = run["curve_summary"]
        assert summary["p99_limit_ms"] == run["params"]["p99_limit_ms"]
        within = [p for p in run["curve"] if p["p99_ms"] <= summary["p99_limit_ms"]]
        if summary["within_up_to_fraction"] is None:
            assert run["curve"][0]["p99_ms"] > summary["p99_limit_ms"]
        else:
            assert summary["within_up_to_fraction"] in [p["fraction_of_saturation"] for p in within]
        if summary["first_over_fraction"] is not None:
            assert summary["first_over_fraction"] not in [p["fraction_of_saturation"] for p in within]
    assert "Latency against the offered rate" in results["_stdout"]


def test_the_curve_is_within_its_limit_only_up_to_the_first_share_that_is_not():
    def point(share: float, p99: float, lost: int = 0) -> dict[str, Any]:
        return {"fraction_of_saturation": share, "offered_deliveries_per_s": share * 1000, "p99_ms": p99, "lost": lost}

    # A later share under the limit again is noise, not headroom.
    summary = curve_summary([point(0.3, 120.0), point(0.1, 40.0), point(0.2, 90.0), point(0.4, 95.0)], 100.0)
    assert summary["within_up_to_fraction"] == 0.2
    assert summary["within_up_to_offered_deliveries_per_s"] == 200.0
    assert curve_summary([point(0.1, 40.0), point(0.2, 60.0, lost=1)], 100.0)["within_up_to_fraction"] == 0.1
    assert curve_summary([point(0.1, 101.0)], 100.0)["within_up_to_fraction"] is None
    assert summary["first_over_fraction"] == 0.3
    assert summary["first_over_offered_deliveries_per_s"] == 300.0
    assert curve_summary([point(0.1, 40.0)], 100.0)["first_over_fraction"] is None


def test_the_curve_refines_halfway_into_the_gap_where_the_limit_was_left():
    def point(share: float, p99: float, lost: int = 0) -> dict[str, Any]:
        return {"fraction_of_saturation": share, "offered_deliveries_per_s": share * 1000, "p99_ms": p99, "lost": lost}

    assert next_curve_share([point(0.1, 40.0), point(0.2, 120.0)], 100.0) == 0.15
    assert next_curve_share([point(0.1, 40.0), point(0.15, 130.0), point(0.2, 120.0)], 100.0) == 0.125
    assert next_curve_share([point(0.1, 40.0), point(0.15, 90.0), point(0.2, 120.0)], 100.0) == 0.175
    # A share over the limit below every measured one: halfway down to nothing.
    assert next_curve_share([point(0.1, 140.0), point(0.2, 150.0)], 100.0) == 0.05
    # A later share within the limit again is noise: the gap is still the first one.
    assert next_curve_share([point(0.1, 40.0), point(0.2, 120.0), point(0.3, 95.0)], 100.0) == 0.15
    # Lost deliveries leave the limit as a late p99 does.
    assert next_curve_share([point(0.1, 40.0), point(0.2, 60.0, lost=3)], 100.0) == 0.15
    # Nothing to refine: every share kept the limit, or the gap is finer than the noise.
    assert next_curve_share([point(0.1, 40.0), point(0.5, 95.0)], 100.0) is None
    assert next_curve_share([point(0.1, 40.0), point(0.11, 120.0)], 100.0) is None


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
                    if "chatserver" in child.cmdline()
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
