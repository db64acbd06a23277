"""Entry point: ``python -m bench.run [--quick] [--targets ...] [--scenarios ...] [--out DIR]``.

Runs each selected scenario on each selected target (one target at a time,
so they never compete for the two cores), prints the tables and writes
``<out>/<UTC date and time>.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import REPO, raise_nofile_limit
from bench.profiling import Profiler
from bench.report import curve_line, ratios, render
from bench.scenarios import DEFAULT_MATRIX, QUICK, SCENARIOS, ScenarioRun, Sizes
from bench.targets import TARGETS, Target, TargetOptions

ALIASES = {"fanout": ["fanout_flood", "fanout_rate"], "all": SCENARIOS}
PACKAGES = [
    "django",
    "channels",
    "channels-redis",
    "daphne",
    "redis",
    "websockets",
    "uvloop",
    "psutil",
    "orjson",
    "kafka-python",
    "scylla-driver",
    "celery",
    "twisted",
    "autobahn",
]


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="Benchmark the chat service.")
    parser.add_argument("--targets", default="raw,channels,embedded,full", help="comma list of " + ",".join(TARGETS))
    parser.add_argument("--scenarios", default="all", help="comma list of " + ",".join([*SCENARIOS, "fanout", "all"]))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: prove every part runs (CI)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="directory for the JSON results")
    parser.add_argument(
        "--restart",
        choices=["scenario", "target"],
        default=None,
        help="fresh server processes per scenario (default) or per target (default with --quick)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when any run failed")
    parser.add_argument("--profile", action="store_true", help="py-spy flame graphs of the server processes")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and databases in the temp dir")
    parser.add_argument("--redis-db-channels", type=int, default=11)
    parser.add_argument("--redis-db-full", type=int, default=12)
    parser.add_argument("--fill-processes", type=int, default=2, help="history filler processes for large fills")
    parser.add_argument("--full-chat-servers", type=int, default=2, help="chat server processes of the full target")
    parser.add_argument("--full-dispatchers", type=int, default=2, help="Kafka dispatcher processes of the full target")
    sizes = parser.add_argument_group("sizes (defaults: the full run; --quick picks tiny ones)")
    for field in dataclasses.fields(Sizes):
        kind = {"int": int, "float": float, "str": str}[str(field.type)]
        sizes.add_argument("--" + field.name.replace("_", "-"), type=kind, default=None, dest=field.name)
    return parser.parse_args(argv)


def chosen_sizes(args: argparse.Namespace) -> Sizes:
    base = dataclasses.replace(QUICK) if args.quick else Sizes()
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Sizes)
        if getattr(args, field.name) is not None
    }
    return dataclasses.replace(base, **overrides)


def split(value: str, known: list[str], aliases: dict[str, list[str]] | None = None) -> list[str]:
    names: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        expanded = (aliases or {}).get(item, [item])
        for name in expanded:
            if name not in known:
                raise SystemExit(f"unknown name {name!r}; choose from {', '.join(known)}")
            if name not in names:
                names.append(name)
    return names


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return done.stdout.rstrip()


def meta(args: argparse.Namespace, sizes: Sizes, run_id: str, nofile: tuple[int, int]) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        "command": " ".join([Path(sys.executable).name, "-m", "bench.run", *sys.argv[1:]]),
        "quick": args.quick,
        "restart": args.restart,
        "sizes": dataclasses.asdict(sizes),
        "machine": {
            "cores": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average_before": [round(value, 2) for value in os.getloadavg()],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "nofile_limit": list(nofile),
        },
        "packages": versions,
        "git": {"head": _git("rev-parse", "HEAD"), "dirty": _git("status", "--porcelain").splitlines()},
        "definitions": {
            "delivery": "one 'message' frame received by one recipient device; the sender's own echo is excluded",
            "deliveries_per_s": "deliveries received during the timed window / window length",
            "latency": "recipient's time.time_ns() at receipt minus the sender's time.time_ns() put in the body",
            "lost": "acked messages a connected member never received by the end of the grace period",
            "duplicates": "the same (sender, sequence) received more than once by one device",
            "cpu": "user+system CPU seconds of each process (and its children) from start to end of the run",
            "rss_peak": "largest RSS sampled every 0.5 s during the run; rss_high_water is the kernel's VmHWM",
            "fraction_of_saturation": "fanout_rate's offered deliveries/s / the same target's fanout_flood "
            "deliveries/s in this invocation (params.rate_basis says where the offered rate came from)",
        },
    }


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=1, default=str))
    temporary.replace(path)


def one_line(record: dict[str, Any]) -> str:
    figures = record.get("figures", {})
    if record["status"] != "ok":
        return f"FAILED: {record.get('error') or record.get('server_died', '')[:300]}"
    if record["scenario"] == "idle":
        memory = record.get("idle", {})
        return f"held {memory.get('held')}/{memory.get('requested')}, {memory.get('rss_per_connection_kb')} KB/conn"
    if record["scenario"] == "fanout_curve":
        return curve_line(record)
    if record["scenario"] == "history":
        page = figures.get("history", {})
        return f"{page.get('reads_per_s')} reads/s, p50 {page.get('p50_ms')} ms, p99 {page.get('p99_ms')} ms"
    latency = figures.get("latency", {})
    params = record.get("params", {})
    offered = ""
    if params.get("offered_deliveries_per_s") is not None:
        offered = f" (offered {params['offered_deliveries_per_s']}"
        if params.get("fraction_of_saturation") is not None:
            offered += f", {params['fraction_of_saturation']} of its flood"
        offered += ")"
    return (
        f"{figures.get('deliveries_per_s')} deliveries/s{offered}, p50 {latency.get('p50_ms')} ms, "
        f"p99 {latency.get('p99_ms')} ms, lost {figures.get('lost')}, dup {figures.get('duplicates')}, "
        f"server CPU {record.get('server_cpu_s')} s"
    )


def run_target(
    target: Target, scenarios: list[str], sizes: Sizes, *, restart: str, run_id: str, profiler: Profiler | None
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []

    def failed(scenario: str, stage: str, exc: BaseException) -> dict[str, Any]:
        return {
            "scenario": scenario,
            "target": target.name,
            "status": "failed",
            "error": f"{stage}: {type(exc).__name__}: {exc}"[:4000],
        }

    _log(f"{target.name}: preparing")
    began = time.monotonic()
    try:
        target.prepare()
    except Exception as exc:
        return [failed(scenario, "prepare", exc) for scenario in scenarios]
    target.info["prepare_s"] = round(time.monotonic() - began, 1)
    target.info["start_s"] = []
    try:
        for number, scenario in enumerate(scenarios):
            if restart == "scenario" or number == 0:
                target.stop()
                began = time.monotonic()
                try:
                    target.start()
                except Exception as exc:
                    records.append(failed(scenario, "start", exc))
                    continue
                target.info["start_s"].append(round(time.monotonic() - began, 1))
            _log(f"{target.name}: {scenario}")
            tag = f"b{run_id}{target.name[0]}{number}"
            if profiler is not None:
                profiler.begin(f"{scenario}-{target.name}", target.server_pids())
            record = ScenarioRun(scenario, target, sizes, tag=tag, earlier=records).execute()
            if profiler is not None:
                record["profiles"] = profiler.end()
            records.append(record)
            _log(f"{target.name}: {scenario}: {one_line(record)}")
    finally:
        target.stop()
        target.teardown()
    return records


def _unwind_on_sigterm() -> None:
    """SIGTERM (``timeout``, a CI runner giving up, an operator) unwinds the run
    like an error, so its ``finally`` blocks stop the servers and drop the
    run's databases, Kafka topic and keyspace instead of leaving them behind.
    Further SIGTERMs are ignored so they cannot cut that clean-up short."""

    def unwind(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _log("SIGTERM: stopping the servers and cleaning up")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, unwind)


def main(argv: list[str] | None = None) -> int:
    _unwind_on_sigterm()
    args = parse_args(argv)
    nofile = raise_nofile_limit()
    sizes = chosen_sizes(args)
    targets = split(args.targets, list(TARGETS))
    scenarios = split(args.scenarios, SCENARIOS, ALIASES)
    restart = args.restart or ("target" if args.quick else "scenario")
    args.restart = restart
    run_id = format(int(time.time() * 10) % 36**7, "x")[-7:]
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    out = Path(args.out) / f"{stamp}{'-quick' if args.quick else ''}.json"
    results: dict[str, Any] = {"meta": meta(args, sizes, run_id, nofile), "targets": {}, "runs": []}
    profiler = Profiler(Path(args.out) / f"{stamp}-profiles") if args.profile else None
    began = time.monotonic()
    _log(f"run {run_id}: targets {targets}, scenarios {scenarios}, workdir {workdir}, results -> {out}")
    try:
        for name in targets:
            wanted = [scenario for scenario in scenarios if name in DEFAULT_MATRIX[scenario]]
            if not wanted:
                continue
            target = TARGETS[name](
                TargetOptions(
                    workdir=workdir,
                    run_id=run_id,
                    redis_db_channels=args.redis_db_channels,
                    redis_db_full=args.redis_db_full,
                    fill_processes=args.fill_processes,
                    full_chat_servers=args.full_chat_servers,
                    full_dispatchers=args.full_dispatchers,
                )
            )
            results["runs"] += run_target(target, wanted, sizes, restart=restart, run_id=run_id, profiler=profiler)
            results["targets"][name] = target.info
            results["ratios"] = ratios(results["runs"])
            write_json(out, results)
    finally:
        results["meta"]["wall_s"] = round(time.monotonic() - began, 1)
        results["ratios"] = ratios(results["runs"])
        write_json(out, results)
        # Logs of a failed run are worth keeping; the databases went in teardown.
        if args.keep_workdir or any(record["status"] != "ok" for record in results["runs"]):
            _log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render(results))
    print(f"\nresults: {out} ({results['meta']['wall_s']} s)")
    failed = [f"{r['scenario']}/{r['target']}" for r in results["runs"] if r["status"] != "ok"]
    if failed:
        print(f"failed runs: {', '.join(failed)}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
