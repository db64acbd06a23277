"""The printed tables and the ratios between targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.stats import ratio

# (numerator target, denominator target) pairs reported for every scenario.
RATIO_PAIRS = [
    ("embedded", "raw"),
    ("embedded", "channels"),
    ("full", "channels"),
    ("full", "raw"),
    ("full", "embedded"),
    ("channels", "raw"),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        # Three significant digits for small values (latencies of a few ms,
        # ratios like 0.057), whole numbers with separators for large ones.
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value else "0"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_fmt(cell) if not isinstance(cell, str) else cell for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(widths[i]) for i, h in enumerate(headers))]
    lines.append("-+-".join("-" * width for width in widths))
    for row in cells:
        # Names left, numbers right, the free-text last column left again.
        last = len(row) - 1
        aligned = [cell.rjust(widths[i]) if 1 < i < last else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(" | ".join(aligned))
    return "\n".join(lines)


def _errors(record: dict[str, Any]) -> str:
    figures = record.get("figures", {})
    parts = []
    refused = sum(figures.get("messages_refused", {}).values())
    if refused:
        parts.append(f"refused {refused}")
    if figures.get("messages_unanswered"):
        parts.append(f"unanswered {figures['messages_unanswered']}")
    failures = sum(figures.get("connect_failures", {}).values())
    if failures:
        parts.append(f"connect-fail {failures}")
    if figures.get("closed_during_run"):
        parts.append(f"closed {figures['closed_during_run']}")
    if record["status"] != "ok":
        parts.append("FAILED")
    return ", ".join(parts) or "none"


def fraction_of_saturation(record: dict[str, Any], records: Sequence[dict[str, Any]]) -> float | None:
    """A fanout_rate run's offered deliveries/s over its target's fanout_flood
    deliveries/s in the same invocation: as recorded when the rate was derived
    from the flood, else from a flood run of that target later in the results."""
    if record["scenario"] != "fanout_rate":
        return None
    params = record.get("params", {})
    if params.get("fraction_of_saturation") is not None:
        return float(params["fraction_of_saturation"])
    floods = [r for r in records if r["scenario"] == "fanout_flood" and r["target"] == record["target"]]
    flood = next((r for r in floods if r["status"] == "ok"), None)
    saturation = flood.get("figures", {}).get("deliveries_per_s") if flood is not None else None
    return ratio(params.get("offered_deliveries_per_s"), saturation)


def delivery_rows(records: Sequence[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for record in records:
        if record["scenario"] in ("history", "idle", "fanout_curve"):
            continue
        figures = record.get("figures", {})
        latency = figures.get("latency", {})
        params = record.get("params", {})
        offered = params.get("offered_deliveries_per_s")
        rows.append(
            [
                record["scenario"],
                record["target"],
                float(offered) if offered is not None else None,
                fraction_of_saturation(record, records),
                figures.get("deliveries_per_s"),
                latency.get("p50_ms"),
                latency.get("p99_ms"),
                latency.get("p999_ms"),
                figures.get("lost"),
                figures.get("duplicates"),
                record.get("server_cpu_s"),
                record.get("infra_cpu_s"),
                record.get("loadgen_cpu_s"),
                _errors(record),
            ]
        )
    return rows


def process_rows(records: Sequence[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for record in records:
        for label, usage in record.get("usage", {}).get("processes", {}).items():
            if usage["group"] == "loadgen":
                continue
            rows.append(
                [
                    record["scenario"],
                    record["target"],
                    f"{label} ({usage['group']})",
                    usage["cpu_s"],
                    usage["rss_peak_mb"],
                    usage["rss_high_water_mb"],
                ]
            )
    return rows


def render(results: dict[str, Any]) -> str:
    records = results["runs"]
    out = []
    out.append(
        "Message fan-out (one delivery = one message frame at one recipient device; the sender's own echo"
        " is excluded). Latency = sender's send time -> recipient's receive time, ms. offered/s = deliveries/s"
        " the fixed schedule offers (- = flood); of sat. = offered / the target's fanout_flood deliv/s."
    )
    out.append(
        table(
            [
                "scenario",
                "target",
                "offered/s",
                "of sat.",
                "deliv/s",
                "p50",
                "p99",
                "p99.9",
                "lost",
                "dup",
                "srv CPU s",
                "infra CPU s",
                "loadgen CPU s",
                "errors",
            ],
            delivery_rows(records),
        )
    )
    curves = [record for record in records if record["scenario"] == "fanout_curve" and record.get("curve")]
    if curves:
        out.append(
            "\nLatency against the offered rate (fanout_curve): fixed-rate runs at shares of the target's"
            " fanout_flood deliveries/s. CPU/1k deliv = servers and shared servers, CPU-seconds per 1,000"
            " deliveries; x flood = that over the flood's."
        )
        rows = [
            [
                record["target"],
                point["fraction_of_saturation"],
                point["offered_deliveries_per_s"],
                point["deliveries_per_s"],
                point["p50_ms"],
                point["p99_ms"],
                point["p999_ms"],
                point["lost"],
                point["duplicates"],
                point["system_cpu_per_1k_deliveries_s"],
                point["cost_over_flood"],
            ]
            for record in curves
            for point in record["curve"]
        ]
        out.append(
            table(
                [
                    "target",
                    "of sat.",
                    "offered/s",
                    "deliv/s",
                    "p50",
                    "p99",
                    "p99.9",
                    "lost",
                    "dup",
                    "CPU/1k deliv",
                    "x flood",
                ],
                rows,
            )
        )
        for record in curves:
            out.append(f"{record['target']}: {curve_line(record)}")
    idle = [record for record in records if record["scenario"] == "idle"]
    if idle:
        out.append("\nIdle connections with heartbeats (one server process)")
        rows = []
        for record in idle:
            memory = record.get("idle", {})
            rows.append(
                [
                    record["target"],
                    f"{_fmt(memory.get('held'))}/{_fmt(memory.get('requested'))}",
                    memory.get("connect_per_s"),
                    memory.get("rss_before_mb"),
                    memory.get("rss_after_mb"),
                    memory.get("rss_per_connection_kb"),
                    record.get("server_cpu_s"),
                    _errors(record),
                ]
            )
        out.append(
            table(
                ["target", "held", "connects/s", "RSS before MB", "RSS after MB", "KB/conn", "CPU s (hold)", "errors"],
                rows,
            )
        )
    history = [record for record in records if record["scenario"] in ("history", "mixed")]
    history = [record for record in history if record.get("figures", {}).get("history")]
    if history:
        out.append("\nHistory pages (GET /api/chats/<id>/messages?limit=50&before=<random depth>), ms")
        rows = []
        for record in history:
            single = record.get("history_single_reader")
            if single:
                rows.append(
                    [
                        record["scenario"] + " (1 reader)",
                        record["target"],
                        record.get("params", {}).get("messages"),
                        single.get("reads_per_s"),
                        single.get("p50_ms"),
                        single.get("p99_ms"),
                        single.get("p999_ms"),
                        single.get("wrong_page_size"),
                        sum(count for code, count in single.get("status", {}).items() if code != "200"),
                        None,
                        None,
                    ]
                )
            page = record["figures"]["history"]
            status = page.get("status", {})
            bad = sum(count for code, count in status.items() if code != "200")
            rows.append(
                [
                    f"{record['scenario']} ({page.get('readers')} readers)",
                    record["target"],
                    record.get("params", {}).get(
                        "messages", record.get("setup", {}).get("history_fill", {}).get("messages")
                    ),
                    page.get("reads_per_s"),
                    page.get("p50_ms"),
                    page.get("p99_ms"),
                    page.get("p999_ms"),
                    page.get("wrong_page_size"),
                    bad,
                    record.get("server_cpu_s"),
                    record.get("infra_cpu_s"),
                ]
            )
        out.append(
            table(
                [
                    "scenario",
                    "target",
                    "stored",
                    "reads/s",
                    "p50",
                    "p99",
                    "p99.9",
                    "wrong pages",
                    "errors",
                    "srv CPU s",
                    "infra CPU s",
                ],
                rows,
            )
        )
    out.append("\nCPU seconds and RSS per process over each run (infra = shared servers)")
    out.append(
        table(["scenario", "target", "process", "CPU s", "peak RSS MB", "RSS high-water MB"], process_rows(records))
    )
    if results.get("ratios"):
        out.append("\nRatios (numerator/denominator, same scenario)")
        rows = [
            [
                row["scenario"],
                row["pair"],
                row.get("deliveries_per_s"),
                row.get("p50"),
                row.get("p99"),
                row.get("cpu_per_1k_deliveries"),
                row.get("rss_per_connection"),
                row.get("history_p99"),
            ]
            for row in results["ratios"]
        ]
        out.append(
            table(["scenario", "pair", "deliv/s", "p50", "p99", "srv CPU/1k deliv", "KB/conn", "history p99"], rows)
        )
    return "\n".join(out)


def curve_line(record: dict[str, Any]) -> str:
    """One sentence: up to which share of its flood the target kept the p99 limit."""
    summary = record.get("curve_summary")
    if not summary:
        return f"no summary: the run stopped before its last share ({_errors(record)})"
    limit = _fmt(summary.get("p99_limit_ms"))
    share = summary.get("within_up_to_fraction")
    if share is None:
        return f"p99 above {limit} ms (or deliveries lost) already at the lowest share measured"
    line = (
        f"p99 within {limit} ms with nothing lost up to {_fmt(share)} of its flood"
        f" ({_fmt(summary.get('within_up_to_offered_deliveries_per_s'))} deliveries/s offered)"
    )
    over = summary.get("first_over_fraction")
    if over is not None:
        line += f"; not at {_fmt(over)} ({_fmt(summary.get('first_over_offered_deliveries_per_s'))} offered)"
    return line


def ratios(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key = {(record["scenario"], record["target"]): record for record in records if record["status"] == "ok"}
    scenarios = list(dict.fromkeys(record["scenario"] for record in records))
    rows = []
    for scenario in scenarios:
        for top, bottom in RATIO_PAIRS:
            a, b = by_key.get((scenario, top)), by_key.get((scenario, bottom))
            if a is None or b is None:
                continue
            fa, fb = a.get("figures", {}), b.get("figures", {})
            row: dict[str, Any] = {"scenario": scenario, "pair": f"{top}/{bottom}"}
            row["deliveries_per_s"] = ratio(fa.get("deliveries_per_s"), fb.get("deliveries_per_s"))
            row["p50"] = ratio(fa.get("latency", {}).get("p50_ms"), fb.get("latency", {}).get("p50_ms"))
            row["p99"] = ratio(fa.get("latency", {}).get("p99_ms"), fb.get("latency", {}).get("p99_ms"))
            row["cpu_per_1k_deliveries"] = ratio(
                a.get("server_cpu_per_1k_deliveries_s"), b.get("server_cpu_per_1k_deliveries_s")
            )
            row["rss_per_connection"] = ratio(
                a.get("idle", {}).get("rss_per_connection_kb"), b.get("idle", {}).get("rss_per_connection_kb")
            )
            row["history_p99"] = ratio(fa.get("history", {}).get("p99_ms"), fb.get("history", {}).get("p99_ms"))
            if any(value is not None for key, value in row.items() if key not in ("scenario", "pair")):
                rows.append(row)
    return rows
