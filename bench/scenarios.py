"""The scenarios: which clients each one opens and what it measures.

- ``fanout_flood``: R chats x M members, one sender per chat sending as fast as
  acks allow (a window of W unacked messages) for a fixed time.
- ``fanout_rate``: the same chats, each sender on a fixed schedule (open loop)
  at ``rate_fraction`` of what the same target delivered in its
  ``fanout_flood`` run earlier in the invocation, or at ``rate`` without one.
- ``fanout_curve``: the same fixed-rate runs at several shares of that flood
  figure (``curve_fractions``), one after the other on the same servers, then
  a few more (``curve_refine``) that halve the gap where the p99 leaves
  ``curve_p99_ms``: the latency and CPU per delivery at each, and up to which
  share the p99 stays within the limit.
- ``idle``: N connections to one server process, each heartbeating every 30 s;
  how many it holds and its RSS per connection.
- ``history``: page latency of ``GET /api/chats/<id>/messages?limit=50&before=``
  at random depths over a large stored history.
- ``mixed``: idle members heartbeating, a few active chats at a moderate rate
  with typing frames, and history reads, all at once.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.loadgen import ClientSpec, LoadRun, LoadSettings, ReaderSpec, aggregate
from bench.monitor import ProcessMonitor, rss_of
from bench.targets import SERVICE_PORTS, BenchChat, HistoryRequest, Population, Target

SCENARIOS = ["fanout_flood", "fanout_rate", "fanout_curve", "idle", "history", "mixed"]
# Which targets each scenario runs on by default (the matrix).
DEFAULT_MATRIX: dict[str, list[str]] = {
    "fanout_flood": ["raw", "channels", "embedded", "full"],
    "fanout_rate": ["raw", "channels", "embedded", "full"],
    # The target the p99 limit at half saturation is set for.
    "fanout_curve": ["full"],
    "idle": ["raw", "embedded"],
    "history": ["embedded", "full"],
    "mixed": ["raw", "channels", "embedded", "full"],
}
# The idle scenario puts every connection on one process.
SINGLE_PROCESS_TARGETS = {"raw", "channels", "embedded"}
HISTORY_TARGETS = {"embedded", "full"}


@dataclass
class Sizes:
    workers: int = 3
    # Handshakes in flight per worker: clients arriving steadily, not a
    # reconnect storm (daphne drops handshakes that wait over 5 s).
    connect_concurrency: int = 4
    connect_phase_limit: float = 300.0
    body_chars: int = 100
    grace: float = 15.0
    quiet: float = 2.0
    start_delay: float = 1.0
    warmup_messages: int = 3
    warmup_settle: float = 1.0
    # Pause before an RSS reading, for the server to finish what the last step started.
    settle: float = 2.0
    # fan-out
    chats: int = 20
    members: int = 10
    duration: float = 20.0
    window: int = 8
    # fanout_rate offers this fraction of the deliveries/s the same target reached
    # in its fanout_flood run earlier in the same invocation (its saturation rate);
    # 0 always offers the fixed ``rate`` below.
    rate_fraction: float = 0.5
    # Messages/s per sender when there is no flood figure to go by (fanout_rate
    # ran without or before fanout_flood, or the flood run failed): 20 chats x
    # 9 recipients x 2/s = 360 deliveries/s offered.
    rate: float = 2.0
    # fanout_curve: shares of this target's fanout_flood deliveries/s (comma list),
    # each run for curve_duration seconds, and the p99 limit they are held to.
    curve_fractions: str = "0.1,0.2,0.3,0.4,0.5"
    curve_duration: float = 15.0
    curve_p99_ms: float = 100.0
    # Then up to this many more runs, each at the share halfway between the
    # highest share that kept the limit and the next one measured (0: none).
    curve_refine: int = 2
    # idle
    idle_connections: int = 10_000
    idle_group: int = 10
    idle_hold: float = 40.0
    heartbeat_interval: float = 30.0
    # history
    history_messages: int = 1_000_000
    history_chats: int = 10
    history_span_days: float = 200.0
    history_duration: float = 30.0
    history_single_duration: float = 10.0
    history_readers: int = 8
    history_limit: int = 50
    # "batch": Cassandra gets the store's rows as single-partition batches;
    # "store": every fill goes through message_store().save_messages.
    history_fill: str = "batch"
    # mixed
    mixed_idle: int = 2000
    mixed_chats: int = 5
    mixed_members: int = 20
    mixed_rate: float = 5.0
    mixed_duration: float = 30.0
    mixed_readers: int = 4
    mixed_read_rate: float = 2.0
    mixed_history_per_chat: int = 2000
    typing_interval: float = 3.0


QUICK = Sizes(
    workers=2,
    grace=5.0,
    quiet=0.5,
    start_delay=0.3,
    warmup_settle=0.3,
    settle=0.3,
    connect_phase_limit=60.0,
    chats=2,
    members=3,
    duration=1.5,
    window=4,
    rate=5.0,
    curve_fractions="0.25,0.5",
    curve_duration=1.5,
    curve_refine=1,
    idle_connections=40,
    idle_group=4,
    idle_hold=2.0,
    heartbeat_interval=1.0,
    history_messages=600,
    history_chats=2,
    history_duration=1.5,
    history_single_duration=1.0,
    history_readers=2,
    mixed_idle=12,
    mixed_chats=2,
    mixed_members=3,
    mixed_rate=4.0,
    mixed_duration=2.0,
    mixed_readers=2,
    mixed_read_rate=2.0,
    mixed_history_per_chat=120,
    typing_interval=1.0,
)


def groups(count: int, size: int, first_user: int = 0) -> list[list[int]]:
    return [list(range(first_user + chat * size, first_user + (chat + 1) * size)) for chat in range(count)]


def clients_for(
    target: Target,
    population: Population,
    chats: list[BenchChat],
    *,
    senders: set[int],
    heartbeat: bool,
    typing: bool,
    first_client: int = 0,
    first_chat_index: int = 0,
) -> list[ClientSpec]:
    """One device per member; ``senders`` are chat positions whose first member sends."""
    specs: list[ClientSpec] = []
    for position, chat in enumerate(chats):
        chat_index = first_chat_index + position
        for place, member in enumerate(chat.members):
            # Senders alternate between servers chat by chat, members within a chat.
            url, headers = target.client_endpoint(population.users[member], chat, place + chat_index)
            is_sender = position in senders and member == chat.members[0]
            specs.append(
                ClientSpec(
                    client_id=first_client + len(specs),
                    url=url,
                    headers=headers,
                    chat_index=chat_index,
                    chat_id=chat.chat_id,
                    sender_index=chat_index if is_sender else -1,
                    heartbeat=heartbeat,
                    typing=typing and is_sender,
                )
            )
    return specs


class ScenarioRun:
    """One scenario on one started target; ``execute`` returns its record."""

    def __init__(
        self,
        scenario: str,
        target: Target,
        sizes: Sizes,
        *,
        tag: str,
        earlier: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.scenario = scenario
        self.target = target
        self.sizes = sizes
        self.tag = tag
        # This target's records from earlier in the invocation (fanout_rate reads its flood figure).
        self.earlier = list(earlier)
        self.record: dict[str, Any] = {"scenario": scenario, "target": target.name, "status": "ok"}

    def execute(self) -> dict[str, Any]:
        began = time.monotonic()
        try:
            getattr(self, self.scenario)()
        except Exception as exc:
            self.record["status"] = "failed"
            self.record["error"] = f"{type(exc).__name__}: {exc}"[:4000]
            self.record["traceback"] = traceback.format_exc()[-4000:]
        death = self.target.check_alive()
        if death is not None:
            self.record["status"] = "failed"
            self.record["server_died"] = death[-4000:]
        self.record["wall_s"] = round(time.monotonic() - began, 1)
        return self.record

    # --- plumbing ------------------------------------------------------------------

    def settings(self, mode: str, duration: float, **overrides: Any) -> LoadSettings:
        sizes = self.sizes
        values: dict[str, Any] = {
            "mode": mode,
            "duration": duration,
            "window": sizes.window,
            "rate": sizes.rate,
            "body_chars": sizes.body_chars,
            "heartbeat_interval": sizes.heartbeat_interval,
            "typing_interval": sizes.typing_interval,
            "grace": sizes.grace,
            "quiet": sizes.quiet,
            "warmup_messages": sizes.warmup_messages,
            "warmup_settle": sizes.warmup_settle,
            "connect_concurrency": sizes.connect_concurrency,
            "connect_phase_limit": sizes.connect_phase_limit,
            "history_limit": sizes.history_limit,
            "run_tag": self.tag,
            **overrides,
        }
        return LoadSettings(**values)

    def drive(
        self,
        clients: list[ClientSpec],
        readers: list[ReaderSpec],
        settings: LoadSettings,
        *,
        after_connect: Any = None,
        into: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Connect everything, run the load, return the figures; they and the
        servers' CPU and memory over the run go into ``into`` (this
        scenario's record by default)."""
        record = self.record if into is None else into
        run = LoadRun(clients, readers, settings, workers=self.sizes.workers)
        connect_began = time.monotonic()
        run.launch()
        try:
            # The connect phase is measured on its own: handshakes (authentication,
            # presence) cost the servers something the timed window does not show.
            connecting = self.monitor(run)
            connecting.start()
            run.wait_ready(timeout=self.sizes.connect_phase_limit + 60)
            record["connect_usage"] = connecting.stop()
            record["connect_phase_s"] = round(time.monotonic() - connect_began, 2)
            if after_connect is not None:
                after_connect()
            monitor = self.monitor(run)
            start_at = time.time() + self.sizes.start_delay
            run.start(start_at)
            time.sleep(max(0.0, start_at - time.time()))
            monitor.start()
            run.wait_done(timeout=settings.duration + settings.grace + 120)
            usage = monitor.stop()
        finally:
            run.shutdown()
        figures = aggregate(run)
        record["figures"] = figures
        record["usage"] = usage
        record["settings"] = asdict(settings)
        summarize_usage(record)
        return figures

    def monitor(self, run: LoadRun) -> ProcessMonitor:
        monitor = ProcessMonitor()
        for label, pid in self.target.server_pids().items():
            monitor.watch("server", label, pid)
        for label, pid in self.target.infra_pids().items():
            # Shared servers: their CPU includes anything else using them.
            monitor.watch("infra", label, pid, rss_root_only=True)
        for index, pid in enumerate(run.worker_pids()):
            monitor.watch("loadgen", f"loadgen-{index}", pid, tree=False)
        return monitor

    def populate(
        self, users: int, chats: list[list[int]], *, history_in: list[int] | None = None, per_chat: int = 0
    ) -> Population:
        """Users and chats on the target; with ``history_in``, ``per_chat``
        messages stored directly in those chats (by position)."""
        sizes = self.sizes
        request = None
        if history_in is not None:
            request = HistoryRequest(
                chat_positions=history_in,
                per_chat=per_chat,
                span_seconds=sizes.history_span_days * 86400,
                # Older than anything sent live, so live messages stay the newest.
                end_unix=time.time() - 60,
                body_chars=sizes.body_chars,
                cursors_per_chat=max(200, min(2000, per_chat)),
                method=sizes.history_fill,
            )
        population = self.target.populate(self.tag, users, chats, request)
        setup = self.record.setdefault("setup", {})
        setup.update({"seconds": population.seconds, "users": users, "chats": len(chats)})
        discovery = getattr(self.target, "discovery", None)
        if discovery:
            setup["discovery_ws_urls"] = sorted(set(discovery))
        if population.history is not None:
            filled = population.history
            setup["history_fill"] = {
                "messages": filled.stored,
                "seconds": filled.seconds,
                "messages_per_s": round(filled.stored / filled.seconds, 1) if filled.seconds else None,
                "method": filled.method,
            }
        return population

    # --- the scenarios -------------------------------------------------------------

    def flood_record(self) -> dict[str, Any] | None:
        """This target's latest ``fanout_flood`` record in this invocation."""
        return next((r for r in reversed(self.earlier) if r["scenario"] == "fanout_flood"), None)

    def rate_basis(self, fraction: float | None = None) -> dict[str, Any]:
        """The fixed-rate run's per-sender rate, and why it is that.

        ``fraction`` (``rate_fraction`` by default: half) of saturation when
        this target's ``fanout_flood`` ran earlier in this invocation and
        delivered something; otherwise the fixed ``rate``, with the reason
        recorded.
        """
        sizes = self.sizes
        share = sizes.rate_fraction if fraction is None else fraction
        recipients = sizes.chats * (sizes.members - 1)
        flood = self.flood_record()
        saturation = flood.get("figures", {}).get("deliveries_per_s") if flood is not None else None
        basis: dict[str, Any] = {
            "source": "fixed",
            "rate_fraction": share,
            "fixed_rate_per_sender": sizes.rate,
            "saturation_deliveries_per_s": saturation,
        }
        if share <= 0:
            basis["reason"] = "rate_fraction is 0: the fixed rate was asked for"
        elif flood is None:
            basis["reason"] = "no fanout_flood run of this target earlier in this invocation"
        elif flood["status"] != "ok":
            basis["reason"] = "this target's fanout_flood run failed"
        elif not saturation or recipients <= 0:
            basis["reason"] = "this target's fanout_flood run delivered nothing"
        else:
            basis["source"] = "fanout_flood"
            basis["reason"] = f"{share:g} of this target's fanout_flood deliveries/s in this invocation"
            per_sender = share * saturation / recipients
            # At least one message per sender in the window, or there is nothing to measure.
            floor = 1.0 / sizes.duration if sizes.duration > 0 else 0.0
            if per_sender < floor:
                basis["reason"] += f"; raised to the floor of one message per sender in the window ({floor:g}/s)"
                per_sender = floor
            basis["rate_per_sender"] = per_sender
        basis.setdefault("rate_per_sender", sizes.rate)
        offered = basis["rate_per_sender"] * recipients
        basis["offered_deliveries_per_s"] = round(offered, 1)
        basis["fraction_of_saturation"] = round(offered / saturation, 3) if saturation else None
        return basis

    def fanout_clients(self) -> list[ClientSpec]:
        """The fan-out chats on the target, one device per member, the first
        member of each chat its sender."""
        sizes = self.sizes
        population = self.populate(sizes.chats * sizes.members, groups(sizes.chats, sizes.members))
        return clients_for(
            self.target, population, population.chats, senders=set(range(sizes.chats)), heartbeat=False, typing=False
        )

    def fanout_shape(self) -> dict[str, Any]:
        """The params every fan-out scenario records: its chats and messages."""
        sizes = self.sizes
        return {"chats": sizes.chats, "members": sizes.members, "senders": sizes.chats, "body_chars": sizes.body_chars}

    def fanout(self, mode: str) -> None:
        sizes = self.sizes
        basis = self.rate_basis() if mode == "rate" else None
        rate = basis["rate_per_sender"] if basis is not None else sizes.rate
        clients = self.fanout_clients()
        self.record["params"] = {
            **self.fanout_shape(),
            "mode": mode,
            "window": sizes.window if mode == "flood" else None,
            "rate_per_sender": round(rate, 3) if basis is not None else None,
            "offered_deliveries_per_s": basis["offered_deliveries_per_s"] if basis is not None else None,
            # Offered / this target's fanout_flood deliveries/s; None without a flood figure.
            "fraction_of_saturation": basis["fraction_of_saturation"] if basis is not None else None,
            "rate_basis": basis,
            "duration_s": sizes.duration,
        }
        self.drive(clients, [], self.settings(mode, sizes.duration, rate=rate))

    def fanout_flood(self) -> None:
        self.fanout("flood")

    def fanout_rate(self) -> None:
        self.fanout("rate")

    def fanout_curve(self) -> None:
        """``fanout_rate`` at each of ``curve_fractions`` of the flood, on the
        same servers and clients, lowest share first, then at up to
        ``curve_refine`` shares placed by halving the gap where the p99 left
        ``curve_p99_ms``. Each point keeps its own figures and CPU; the summary
        says up to which share every point's p99 stayed within the limit with
        nothing lost."""
        sizes = self.sizes
        fractions = sorted({float(item) for item in sizes.curve_fractions.split(",") if item.strip()})
        if not fractions or fractions[0] <= 0:
            raise ValueError(f"curve_fractions must be positive shares of the flood, not {sizes.curve_fractions!r}")
        if sizes.curve_refine < 0:
            raise ValueError(f"curve_refine must be 0 or more, not {sizes.curve_refine}")
        flood = self.flood_record()
        flood_cost = flood.get("system_cpu_per_1k_deliveries_s") if flood is not None else None
        clients = self.fanout_clients()
        self.record["params"] = {
            **self.fanout_shape(),
            "fractions": fractions,
            "refine": sizes.curve_refine,
            "duration_s": sizes.curve_duration,
            "p99_limit_ms": sizes.curve_p99_ms,
            "flood_system_cpu_per_1k_deliveries_s": flood_cost,
        }
        # Kept in order of share; "measured" is each point's place in time.
        points: list[dict[str, Any]] = []
        self.record["curve"] = points

        def measure(fraction: float, *, refinement: bool) -> None:
            basis = self.rate_basis(fraction)
            if basis["source"] != "fanout_flood":
                raise RuntimeError(f"fanout_curve needs this target's flood figure: {basis['reason']}")
            measured = len(points)
            # A tag per point: client_msg_ids reused from an earlier point would be acked as retries.
            settings = self.settings(
                "rate", sizes.curve_duration, rate=basis["rate_per_sender"], run_tag=f"{self.tag}p{measured}"
            )
            run: dict[str, Any] = {}
            figures = self.drive(clients, [], settings, into=run)
            latency = figures.get("latency", {})
            cost = run.get("system_cpu_per_1k_deliveries_s")
            points.append(
                {
                    "fraction_of_saturation": basis["fraction_of_saturation"],
                    "offered_deliveries_per_s": basis["offered_deliveries_per_s"],
                    "refinement": refinement,
                    "measured": measured,
                    "deliveries_per_s": figures.get("deliveries_per_s"),
                    "p50_ms": latency.get("p50_ms"),
                    "p99_ms": latency.get("p99_ms"),
                    "p999_ms": latency.get("p999_ms"),
                    "lost": figures.get("lost"),
                    "duplicates": figures.get("duplicates"),
                    "system_cpu_per_1k_deliveries_s": cost,
                    "cost_over_flood": round(cost / flood_cost, 3) if cost and flood_cost else None,
                    "rate_basis": basis,
                    "run": run,
                }
            )
            points.sort(key=lambda point: point["fraction_of_saturation"])

        for fraction in fractions:
            measure(fraction, refinement=False)
        for _ in range(sizes.curve_refine):
            share = next_curve_share(points, sizes.curve_p99_ms)
            if share is None:
                break
            measure(share, refinement=True)
        self.record["curve_summary"] = curve_summary(points, sizes.curve_p99_ms)

    def idle(self) -> None:
        sizes = self.sizes
        if self.target.name not in SINGLE_PROCESS_TARGETS:
            raise RuntimeError(f"the idle scenario needs a one-process target, not {self.target.name}")
        count = sizes.idle_connections
        chats = groups(count // sizes.idle_group, sizes.idle_group)
        if count % sizes.idle_group:
            chats.append(list(range(len(chats) * sizes.idle_group, count)))
        population = self.populate(count, chats)
        clients = clients_for(self.target, population, population.chats, senders=set(), heartbeat=True, typing=False)
        pid = self.target.server_pids()[self.target.idle_process()]
        time.sleep(sizes.settle)
        rss_before = rss_of(pid)
        memory: dict[str, Any] = {"rss_before_mb": round(rss_before / 2**20, 1)}

        def after_connect() -> None:
            time.sleep(sizes.settle)
            memory["rss_connected_mb"] = round(rss_of(pid) / 2**20, 1)

        self.record["params"] = {
            "connections": count,
            "group_size": sizes.idle_group,
            "heartbeat_interval_s": sizes.heartbeat_interval,
            "hold_s": sizes.idle_hold,
        }
        figures = self.drive(
            clients, [], self.settings("idle", sizes.idle_hold, grace=0.0, quiet=0.0), after_connect=after_connect
        )
        rss_after = rss_of(pid)
        held = figures["open_at_end"]
        memory["rss_after_mb"] = round(rss_after / 2**20, 1)
        memory["held"] = held
        memory["requested"] = count
        memory["connect_failures"] = sum(figures["connect_failures"].values())
        # Workers connect side by side, so the slowest one's time is the phase's.
        seconds = figures["connect_seconds"]
        memory["connect_seconds"] = seconds
        memory["connect_per_s"] = round(figures["connected"] / seconds, 1) if seconds else None
        memory["rss_per_connection_kb"] = round((rss_after - rss_before) / held / 1024, 2) if held else None
        memory["process"] = self.target.idle_process()
        self.record["idle"] = memory

    def history(self) -> None:
        sizes = self.sizes
        if self.target.name not in HISTORY_TARGETS:
            raise RuntimeError(f"{self.target.name} keeps no history")
        readers_count = sizes.history_readers
        # Every reader is a member of every history chat.
        per_chat = max(1, sizes.history_messages // sizes.history_chats)
        population = self.populate(
            readers_count,
            [list(range(readers_count))] * sizes.history_chats,
            history_in=list(range(sizes.history_chats)),
            per_chat=per_chat,
        )
        filled = population.history
        assert filled is not None
        if self.target.name == "full":
            # A bulk fill leaves Cassandra compacting for a while; pages read
            # meanwhile measure the compaction, not the read path.
            self.record["cassandra_compaction_wait"] = wait_for_compactions()
        bases = self.target.http_bases()
        cursors = tuple(filled.cursors)
        readers = [
            ReaderSpec(reader_id=index, base_url=bases[index % len(bases)], token=user.token, cursors=cursors)
            for index, user in enumerate(population.users)
        ]
        self.record["params"] = {
            "messages": filled.stored,
            "chats": sizes.history_chats,
            "per_chat": per_chat,
            "span_days": sizes.history_span_days,
            "readers": readers_count,
            "limit": sizes.history_limit,
            "duration_s": sizes.history_duration,
            "closed_loop": True,
        }
        # One reader first: the cost of a page on an otherwise idle server,
        # before the closed loop of all readers measures it under contention.
        single = self.settings("history", sizes.history_single_duration, grace=0.0, quiet=0.0)
        solo = LoadRun([], readers[:1], single, workers=1)
        solo.launch()
        try:
            solo.wait_ready(timeout=60)
            solo.start(time.time() + 0.2)
            solo.wait_done(timeout=single.duration + 60)
        finally:
            solo.shutdown()
        self.record["history_single_reader"] = aggregate(solo).get("history")
        self.drive([], readers, self.settings("history", sizes.history_duration, grace=0.0, quiet=0.0))

    def mixed(self) -> None:
        sizes = self.sizes
        idle_chats = groups(sizes.mixed_idle // sizes.idle_group, sizes.idle_group)
        idle_users = len(idle_chats) * sizes.idle_group
        active_chats = groups(sizes.mixed_chats, sizes.mixed_members, first_user=idle_users)
        users = idle_users + sizes.mixed_chats * sizes.mixed_members
        project = self.target.project
        population = self.populate(
            users,
            active_chats + idle_chats,
            history_in=list(range(sizes.mixed_chats)) if project else None,
            per_chat=sizes.mixed_history_per_chat,
        )
        active = population.chats[: sizes.mixed_chats]
        idle = population.chats[sizes.mixed_chats :]
        clients = clients_for(
            self.target, population, active, senders=set(range(len(active))), heartbeat=True, typing=True
        )
        clients += clients_for(
            self.target,
            population,
            idle,
            senders=set(),
            heartbeat=True,
            typing=False,
            first_client=len(clients),
            first_chat_index=len(active),
        )
        readers: list[ReaderSpec] = []
        if population.history is not None:
            filled = population.history
            bases = self.target.http_bases()
            for index in range(sizes.mixed_readers):
                chat = active[index % len(active)]
                # A member other than the sender, so reads come from a receiving device's user.
                member = chat.members[1 + (index // len(active)) % (len(chat.members) - 1)]
                cursors = tuple(cursor for cursor in filled.cursors if cursor[0] == chat.chat_id)
                readers.append(
                    ReaderSpec(
                        reader_id=index,
                        base_url=bases[index % len(bases)],
                        token=population.users[member].token,
                        cursors=cursors,
                    )
                )
        self.record["params"] = {
            "idle_members": idle_users,
            "active_chats": sizes.mixed_chats,
            "active_members": sizes.mixed_members,
            "rate_per_sender": sizes.mixed_rate,
            "offered_deliveries_per_s": sizes.mixed_rate * sizes.mixed_chats * (sizes.mixed_members - 1),
            "typing_every_s": sizes.typing_interval,
            "heartbeat_every_s": sizes.heartbeat_interval,
            "history_readers": len(readers),
            "history_reads_per_s_offered": sizes.mixed_read_rate * len(readers),
            "duration_s": sizes.mixed_duration,
        }
        self.drive(
            clients,
            readers,
            self.settings("mixed", sizes.mixed_duration, rate=sizes.mixed_rate, reader_rate=sizes.mixed_read_rate),
        )


def wait_for_compactions(*, timeout: float = 300.0, quiet_polls: int = 3) -> dict[str, Any]:
    """Wait until Cassandra runs and queues no compaction for ``quiet_polls``
    one-second polls in a row (what ``nodetool compactionstats`` shows, read
    from the ``system_views`` virtual tables: the node runs without JMX).

    The node may be shared, so other work's compactions count too; after
    ``timeout`` seconds the run goes on and the record says so."""
    from cassandra.cluster import Cluster
    from cassandra.policies import RoundRobinPolicy

    cluster = Cluster(["127.0.0.1"], port=SERVICE_PORTS["cassandra"], load_balancing_policy=RoundRobinPolicy())
    began = time.monotonic()
    quiet = 0
    try:
        session = cluster.connect()
        while quiet < quiet_polls and time.monotonic() - began < timeout:
            running = len(list(session.execute("SELECT keyspace_name FROM system_views.sstable_tasks")))
            pool = session.execute(
                "SELECT active_tasks, pending_tasks FROM system_views.thread_pools WHERE name = 'CompactionExecutor'"
            ).one()
            queued = (pool.active_tasks + pool.pending_tasks) if pool is not None else 0
            quiet = quiet + 1 if running == 0 and queued == 0 else 0
            if quiet < quiet_polls:
                time.sleep(1.0)
    finally:
        cluster.shutdown()
    return {"seconds": round(time.monotonic() - began, 1), "settled": quiet >= quiet_polls}


def curve_summary(points: Sequence[dict[str, Any]], p99_limit_ms: float) -> dict[str, Any]:
    """Up to which share of the flood every point, lowest first, kept its p99
    within the limit and lost nothing (None when the lowest did not), and the
    share that first did not (None when every one did)."""
    within: dict[str, Any] | None = None
    broke: dict[str, Any] | None = None
    for point in sorted(points, key=lambda p: p["fraction_of_saturation"]):
        p99 = point["p99_ms"]
        if p99 is None or p99 > p99_limit_ms or point["lost"]:
            broke = point
            break
        within = point
    return {
        "p99_limit_ms": p99_limit_ms,
        "within_up_to_fraction": within["fraction_of_saturation"] if within else None,
        "within_up_to_offered_deliveries_per_s": within["offered_deliveries_per_s"] if within else None,
        "first_over_fraction": broke["fraction_of_saturation"] if broke else None,
        "first_over_offered_deliveries_per_s": broke["offered_deliveries_per_s"] if broke else None,
    }


def next_curve_share(points: Sequence[dict[str, Any]], p99_limit_ms: float, *, finest: float = 0.02) -> float | None:
    """The share to measure next: halfway between the highest share that kept
    the limit (with every share below it; 0 when none did) and the lowest
    share measured above that. None when every share kept it, or when the two
    are less than ``finest`` apart: the runs' noise is larger than that."""
    kept = float(curve_summary(points, p99_limit_ms)["within_up_to_fraction"] or 0.0)
    above = [float(point["fraction_of_saturation"]) for point in points if point["fraction_of_saturation"] > kept]
    if not above or min(above) - kept < finest:
        return None
    return round((kept + min(above)) / 2, 3)


def summarize_usage(record: dict[str, Any]) -> None:
    """The headline resource figures of a run, from the monitor's report."""
    processes = record["usage"]["processes"]
    figures = record["figures"]

    def group_sum(group: str, key: str) -> float:
        return round(sum(float(p[key]) for p in processes.values() if p["group"] == group and p[key] is not None), 2)

    server_cpu = group_sum("server", "cpu_s")
    infra_cpu = group_sum("infra", "cpu_s")
    loadgen_cpu = figures["loadgen"]["cpu_s_window"]
    deliveries = figures["deliveries"]
    record["server_cpu_s"] = server_cpu
    has_infra = any(p["group"] == "infra" for p in processes.values())
    record["infra_cpu_s"] = infra_cpu if has_infra else None
    record["loadgen_cpu_s"] = loadgen_cpu
    record["server_rss_peak_mb"] = {label: p["rss_peak_mb"] for label, p in processes.items() if p["group"] == "server"}
    record["server_cpu_per_1k_deliveries_s"] = round(server_cpu / deliveries * 1000, 4) if deliveries else None
    record["system_cpu_per_1k_deliveries_s"] = (
        round((server_cpu + infra_cpu) / deliveries * 1000, 4) if deliveries else None
    )
    busy = record["usage"]["machine_busy_cpu_s"]
    # Whatever else ran on the machine meanwhile (other tenants, the kernel, this parent).
    record["unattributed_cpu_s"] = round(busy - server_cpu - infra_cpu - loadgen_cpu, 2)
