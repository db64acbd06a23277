"""The load generator: real WebSocket clients (and HTTP history readers) spread
over worker processes.

Every target speaks the same frames as far as the measurement is concerned:
the client sends ``{"type": "send", "chat_id", "client_msg_id", "body"}``, the
sender gets ``{"type": "ack", "client_msg_id"}`` (or an ``error`` frame) and
every member of the chat gets ``{"type": "message", "body", ...}``. The body
carries ``<sender>|<seq>|<time.time_ns() at send>|<padding>``, so end-to-end
latency and loss are measured from the body alone, whatever else a target puts
in its frames.

The parent process (``LoadRun``) hands each worker its clients, waits until all
are connected (the caller measures the servers then), gives every worker one
wall-clock start time, and collects what each recorded: latency histograms,
bitmaps of the sequence numbers each receiver saw, counters. ``aggregate``
turns those into the figures of one scenario run.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import raise_nofile_limit
from bench.httpclient import HttpClient
from bench.stats import Bitmap, Histogram, popcount
from chatsite.gc_tuning import SERVING_YOUNG_THRESHOLD, settle_start_up

Mode = Literal["flood", "rate", "idle", "mixed", "history"]


@dataclass(frozen=True)
class ClientSpec:
    """One WebSocket client (one device)."""

    client_id: int
    url: str
    headers: tuple[tuple[str, str], ...]
    chat_index: int  # position in the scenario's chat list; -1 for none
    chat_id: int  # what goes into "send" and "typing" frames
    sender_index: int = -1  # >= 0: this client sends the chat's messages
    heartbeat: bool = False
    typing: bool = False


@dataclass(frozen=True)
class ReaderSpec:
    """One HTTP client paging through history."""

    reader_id: int
    base_url: str
    token: str
    # (chat_id, before message_id or "" for the newest page, expected page size)
    cursors: tuple[tuple[int, str, int], ...]


@dataclass(frozen=True)
class LoadSettings:
    mode: Mode
    duration: float
    window: int = 8
    rate: float = 10.0
    body_chars: int = 100
    heartbeat_interval: float = 30.0
    typing_interval: float = 3.0
    grace: float = 15.0
    quiet: float = 2.0
    connect_concurrency: int = 4
    connect_timeout: float = 30.0
    # Clients not yet connecting when the connect phase has lasted this long
    # are not attempted (reported as such): a slow target must not eat the run.
    connect_phase_limit: float = 300.0
    reader_concurrency: int = 1
    reader_rate: float = 0.0  # reads/s per reader; 0 means closed loop
    history_limit: int = 50
    run_tag: str = "b"
    # Messages each sender sends (one at a time) before the timed window:
    # lazy set-up on the servers (a Kafka producer's first connection, code
    # paths not yet run) should not be charged to the first second.
    warmup_messages: int = 3
    warmup_settle: float = 1.0


def _use_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class SenderState:
    __slots__ = ("acked", "errors", "pending", "sent", "window")

    def __init__(self, window: int) -> None:
        self.window = asyncio.Semaphore(window)
        self.sent = 0
        self.acked = Bitmap()
        self.pending: dict[int, int] = {}  # seq -> send time (ns)
        self.errors: Counter[str] = Counter()


class ClientState:
    __slots__ = ("close_code", "closed_early", "received", "sender", "spec", "warmup", "ws")

    def __init__(self, spec: ClientSpec, ws: ClientConnection, window: int) -> None:
        self.spec = spec
        self.ws = ws
        self.received: dict[int, Bitmap] = {}
        self.sender = SenderState(window) if spec.sender_index >= 0 else None
        self.closed_early = False
        self.close_code: int | None = None
        # (client_msg_id, future) of the warm-up message awaiting its answer.
        self.warmup: tuple[str, asyncio.Future[str]] | None = None


class Worker:
    def __init__(
        self, index: int, clients: Sequence[ClientSpec], readers: Sequence[ReaderSpec], settings: LoadSettings
    ) -> None:
        self.index = index
        self.specs = clients
        self.readers = readers
        self.settings = settings
        self.states: list[ClientState] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.connect_failures: Counter[str] = Counter()
        self.connect_hist = Histogram()
        self.latency = Histogram()
        self.ack_latency = Histogram()
        self.send_lag = Histogram()
        self.history = Histogram()
        self.history_status: Counter[str] = Counter()
        self.history_invalid = 0
        self.frames: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()
        self.deliveries = 0
        self.in_window = 0
        self.duplicates = 0
        self.echoes = 0
        self.unexpected = 0
        self.ack_unknown = 0
        self.heartbeats_sent = 0
        self.typing_sent = 0
        self.timeline: list[int] = []
        self.start_ns = 0
        self.end_ns = 0
        self.last_message_ns = 0
        self.closing = False
        self.cpu_window = 0.0
        self.connect_seconds = 0.0
        self.warmup_failures: Counter[str] = Counter()
        self.connect_timeline: list[int] = []

    # --- connecting -------------------------------------------------------------

    async def connect_all(self) -> None:
        gate = asyncio.Semaphore(self.settings.connect_concurrency)
        phase_began = time.monotonic()
        deadline = phase_began + self.settings.connect_phase_limit

        async def open_one(spec: ClientSpec) -> None:
            async with gate:
                if time.monotonic() > deadline:
                    self.connect_failures["not attempted: connect phase time limit"] += 1
                    return
                began = time.perf_counter()
                try:
                    ws = await connect(
                        spec.url,
                        additional_headers=list(spec.headers),
                        # No target compresses (daphne does not negotiate it), and
                        # compressing only against the raw relay would be unfair.
                        compression=None,
                        # Browsers send no WebSocket pings; the protocol's heartbeat
                        # frame is the keep-alive, and client pings would add load.
                        ping_interval=None,
                        open_timeout=self.settings.connect_timeout,
                        close_timeout=2,
                        max_size=2**22,
                        max_queue=None,
                    )
                except Exception as exc:
                    self.connect_failures[_reason(exc)] += 1
                    return
                self.connect_hist.record(int((time.perf_counter() - began) * 1e6))
                second = int(time.monotonic() - phase_began)
                while len(self.connect_timeline) <= second:
                    self.connect_timeline.append(0)
                self.connect_timeline[second] += 1
                state = ClientState(spec, ws, self.settings.window)
                self.states.append(state)
                self.tasks.append(asyncio.create_task(self.receive_loop(state)))

        began = time.monotonic()
        await asyncio.gather(*(open_one(spec) for spec in self.specs))
        self.connect_seconds = time.monotonic() - began

    async def warm_up(self) -> None:
        count = self.settings.warmup_messages
        senders = [state for state in self.states if state.sender is not None]
        if count <= 0 or not senders:
            return
        loop = asyncio.get_running_loop()

        async def warm(state: ClientState) -> None:
            spec = state.spec
            for number in range(count):
                client_msg_id = f"{self.settings.run_tag}w-{spec.sender_index}-{number}"
                answer: asyncio.Future[str] = loop.create_future()
                state.warmup = (client_msg_id, answer)
                body = f"w|{number}|"
                frame = {"type": "send", "chat_id": spec.chat_id, "client_msg_id": client_msg_id, "body": body}
                try:
                    await state.ws.send(orjson.dumps(frame).decode())
                    outcome = await asyncio.wait_for(answer, 15)
                except (TimeoutError, ConnectionClosed) as exc:
                    self.warmup_failures[_reason(exc)] += 1
                    return
                finally:
                    state.warmup = None
                if outcome != "ack":
                    self.warmup_failures[outcome] += 1

        await asyncio.gather(*(warm(state) for state in senders))
        # Let the warm-up messages reach their recipients before the clock starts.
        await asyncio.sleep(self.settings.warmup_settle)

    def _warmup_answer(self, state: ClientState, frame: dict[str, Any], outcome: str) -> bool:
        pending = state.warmup
        if pending is None or frame.get("client_msg_id") != pending[0]:
            return False
        if not pending[1].done():
            pending[1].set_result(outcome)
        return True

    def connect_report(self) -> dict[str, Any]:
        return {
            "worker": self.index,
            "warmup_failures": dict(self.warmup_failures),
            "timeline": self.connect_timeline,
            "seconds": round(self.connect_seconds, 3),
            "connected": len(self.states),
            "failed": dict(self.connect_failures),
            "connect_ms": self.connect_hist.to_wire(),
        }

    # --- receiving --------------------------------------------------------------

    async def receive_loop(self, state: ClientState) -> None:
        try:
            async for raw in state.ws:
                now_ns = time.time_ns()
                try:
                    frame = orjson.loads(raw)
                    kind = frame.get("type")
                except (orjson.JSONDecodeError, AttributeError):
                    self.unexpected += 1
                    continue
                if kind == "message":
                    self.on_message(state, frame, now_ns)
                elif kind == "ack":
                    self.on_ack(state, frame, now_ns)
                elif kind == "error":
                    self.on_error(state, frame)
                else:
                    self.frames[str(kind)] += 1
        except ConnectionClosed as exc:
            state.close_code = exc.rcvd.code if exc.rcvd is not None else None
        except Exception:
            state.close_code = -1
        if not self.closing:
            state.closed_early = True
        if state.sender is not None:
            # Nothing more will be acked on this connection: let the sender loop end.
            state.sender.window.release()

    def on_message(self, state: ClientState, frame: dict[str, Any], now_ns: int) -> None:
        body = str(frame.get("body", ""))
        if body.startswith("w|"):
            self.frames["warmup_message"] += 1
            return
        self.frames["message"] += 1
        self.last_message_ns = now_ns
        try:
            sender_text, seq_text, sent_text, _ = body.split("|", 3)
            sender, seq, sent_ns = int(sender_text), int(seq_text), int(sent_text)
        except ValueError:
            self.unexpected += 1
            return
        if sender == state.spec.sender_index:
            self.echoes += 1
            return
        seen = state.received.get(sender)
        if seen is None:
            seen = state.received[sender] = Bitmap()
        if not seen.add(seq):
            self.duplicates += 1
            return
        self.deliveries += 1
        self.latency.record((now_ns - sent_ns) // 1000)
        if self.start_ns <= now_ns <= self.end_ns:
            self.in_window += 1
            second = (now_ns - self.start_ns) // 1_000_000_000
            while len(self.timeline) <= second:
                self.timeline.append(0)
            self.timeline[second] += 1

    def _seq_of(self, frame: dict[str, Any]) -> int | None:
        client_msg_id = frame.get("client_msg_id")
        if not isinstance(client_msg_id, str):
            return None
        try:
            return int(client_msg_id.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            return None

    def on_ack(self, state: ClientState, frame: dict[str, Any], now_ns: int) -> None:
        if self._warmup_answer(state, frame, "ack"):
            return
        self.frames["ack"] += 1
        sender, seq = state.sender, self._seq_of(frame)
        if sender is None or seq is None:
            self.ack_unknown += 1
            return
        sent_ns = sender.pending.pop(seq, None)
        if sent_ns is None:
            self.ack_unknown += 1
            return
        self.ack_latency.record((now_ns - sent_ns) // 1000)
        sender.acked.add(seq)
        sender.window.release()

    def on_error(self, state: ClientState, frame: dict[str, Any]) -> None:
        code = str(frame.get("code"))
        if self._warmup_answer(state, frame, f"error {code}"):
            return
        self.frames["error"] += 1
        self.error_codes[code] += 1
        sender, seq = state.sender, self._seq_of(frame)
        if sender is not None and seq is not None and sender.pending.pop(seq, None) is not None:
            sender.errors[code] += 1
            sender.window.release()

    # --- sending ----------------------------------------------------------------

    async def send_message(self, state: ClientState, seq: int) -> None:
        assert state.sender is not None
        spec = state.spec
        sent_ns = time.time_ns()
        head = f"{spec.sender_index}|{seq}|{sent_ns}|"
        body = head + "x" * max(1, self.settings.body_chars - len(head))
        frame = {
            "type": "send",
            "chat_id": spec.chat_id,
            "client_msg_id": f"{self.settings.run_tag}-{spec.sender_index}-{seq}",
            "body": body,
        }
        state.sender.pending[seq] = sent_ns
        state.sender.sent += 1
        await state.ws.send(orjson.dumps(frame).decode())

    async def flood(self, state: ClientState, end: float) -> None:
        assert state.sender is not None
        window = state.sender.window
        seq = 0
        while not state.closed_early:
            remaining = end - time.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(window.acquire(), remaining)
            except TimeoutError:
                return
            if time.time() >= end or state.closed_early:
                return
            try:
                await self.send_message(state, seq)
            except ConnectionClosed:
                return
            seq += 1

    async def paced(self, state: ClientState, start: float, end: float, rate: float) -> None:
        """Open loop: the schedule does not wait for acks; lateness is recorded."""
        interval = 1.0 / rate
        phase = random.random() * interval
        seq = 0
        while not state.closed_early:
            due = start + phase + seq * interval
            if due >= end:
                return
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.send_lag.record(int((time.time() - due) * 1e6))
            try:
                await self.send_message(state, seq)
            except ConnectionClosed:
                return
            seq += 1

    async def every(self, state: ClientState, end: float, interval: float, frame: dict[str, Any], kind: str) -> None:
        delay = random.random() * interval
        text = orjson.dumps(frame).decode()
        while time.time() + delay < end and not state.closed_early:
            await asyncio.sleep(delay)
            try:
                await state.ws.send(text)
            except ConnectionClosed:
                return
            if kind == "heartbeat":
                self.heartbeats_sent += 1
            else:
                self.typing_sent += 1
            delay = interval

    async def read_history(self, reader: ReaderSpec, start: float, end: float) -> None:
        client = HttpClient(reader.base_url, {"Authorization": f"Bearer {reader.token}"})
        limit = self.settings.history_limit
        rate = self.settings.reader_rate
        picker = random.Random(reader.reader_id)
        count = 0
        try:
            while time.time() < end:
                if rate > 0:
                    due = start + (count + picker.random()) / rate
                    if due >= end:
                        return
                    await asyncio.sleep(max(0.0, due - time.time()))
                count += 1
                chat_id, before, expected = picker.choice(reader.cursors)
                path = f"/api/chats/{chat_id}/messages?limit={limit}" + (f"&before={before}" if before else "")
                began = time.perf_counter()
                try:
                    status, body = await client.get(path)
                except Exception as exc:
                    self.history_status[_reason(exc)] += 1
                    await asyncio.sleep(0.05)
                    continue
                self.history.record(int((time.perf_counter() - began) * 1e6))
                self.history_status[str(status)] += 1
                if status == 200:
                    # -1: any page size is right (chats still being written to).
                    page = len(orjson.loads(body).get("messages", []))
                    if expected >= 0 and page != min(limit, expected):
                        self.history_invalid += 1
        finally:
            await client.close()

    # --- the run ----------------------------------------------------------------

    async def run(self, start: float) -> None:
        settings = self.settings
        end = start + settings.duration
        self.start_ns, self.end_ns = int(start * 1e9), int(end * 1e9)
        await asyncio.sleep(max(0.0, start - time.time()))
        cpu_start = time.process_time()
        jobs: list[asyncio.Task[None]] = []
        for state in self.states:
            spec = state.spec
            if spec.sender_index >= 0 and settings.mode == "flood":
                jobs.append(asyncio.create_task(self.flood(state, end)))
            elif spec.sender_index >= 0 and settings.mode in ("rate", "mixed"):
                jobs.append(asyncio.create_task(self.paced(state, start, end, settings.rate)))
            if spec.heartbeat:
                beat = {"type": "heartbeat"}
                jobs.append(asyncio.create_task(self.every(state, end, settings.heartbeat_interval, beat, "heartbeat")))
            if spec.typing:
                typing = {"type": "typing", "chat_id": spec.chat_id}
                jobs.append(asyncio.create_task(self.every(state, end, settings.typing_interval, typing, "typing")))
        for reader in self.readers:
            for _ in range(max(1, settings.reader_concurrency)):
                jobs.append(asyncio.create_task(self.read_history(reader, start, end)))
        if jobs:
            await asyncio.wait(jobs)
        await self.drain(end)
        self.cpu_window = time.process_time() - cpu_start

    async def drain(self, end: float) -> None:
        """Wait for stragglers: until every send is answered and no message has
        arrived for ``quiet`` seconds, at most ``grace`` seconds after the end."""
        settings = self.settings
        deadline = max(end, time.time()) + settings.grace
        while time.time() < deadline:
            pending = any(state.sender is not None and state.sender.pending for state in self.states)
            quiet_since = max(self.last_message_ns / 1e9, end)
            if not pending and time.time() - quiet_since >= settings.quiet:
                return
            await asyncio.sleep(0.1)

    def result(self) -> dict[str, Any]:
        receivers = []
        senders = []
        for state in self.states:
            spec = state.spec
            if state.sender is not None:
                senders.append(
                    {
                        "sender_index": spec.sender_index,
                        "chat_index": spec.chat_index,
                        "sent": state.sender.sent,
                        "acked": bytes(state.sender.acked.bits),
                        "unanswered": len(state.sender.pending),
                        "errors": dict(state.sender.errors),
                    }
                )
            receivers.append(
                {
                    "client_id": spec.client_id,
                    "chat_index": spec.chat_index,
                    "sender_index": spec.sender_index,
                    "received": {sender: bytes(bitmap.bits) for sender, bitmap in state.received.items()},
                    "closed_early": state.closed_early,
                    "close_code": state.close_code,
                }
            )
        return {
            "worker": self.index,
            "receivers": receivers,
            "senders": senders,
            "latency": self.latency.to_wire(),
            "ack_latency": self.ack_latency.to_wire(),
            "send_lag": self.send_lag.to_wire(),
            "history": self.history.to_wire(),
            "history_status": dict(self.history_status),
            "history_invalid": self.history_invalid,
            "frames": dict(self.frames),
            "error_codes": dict(self.error_codes),
            "deliveries": self.deliveries,
            "in_window": self.in_window,
            "duplicates": self.duplicates,
            "echoes": self.echoes,
            "unexpected": self.unexpected,
            "ack_unknown": self.ack_unknown,
            "heartbeats_sent": self.heartbeats_sent,
            "typing_sent": self.typing_sent,
            "timeline": self.timeline,
            "open_at_end": sum(1 for state in self.states if not state.closed_early),
            "cpu_window_s": self.cpu_window,
            "cpu_total_s": time.process_time(),
        }

    async def close_all(self) -> None:
        self.closing = True

        async def close(state: ClientState) -> None:
            with contextlib.suppress(Exception):
                await state.ws.close()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(close(state) for state in self.states)), 15)
        for task in self.tasks:
            task.cancel()


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:80] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _worker_async(
    conn: Connection, index: int, clients: Sequence[ClientSpec], readers: Sequence[ReaderSpec], settings: LoadSettings
) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(index, clients, readers, settings)
    await worker.connect_all()
    await worker.warm_up()
    conn.send(("ready", worker.connect_report()))
    command, argument = await loop.run_in_executor(None, conn.recv)
    if command == "start":
        await worker.run(float(argument))
        conn.send(("done", worker.result()))
        await loop.run_in_executor(None, conn.recv)
    await worker.close_all()


def worker_main(
    conn: Connection, index: int, clients: Sequence[ClientSpec], readers: Sequence[ReaderSpec], settings: LoadSettings
) -> None:
    raise_nofile_limit()
    _use_uvloop()
    # The same collector settings as the servers: a worker's collection pauses
    # would count in every target's latency.
    settle_start_up(freeze=True, young_threshold=SERVING_YOUNG_THRESHOLD)
    try:
        asyncio.run(_worker_async(conn, index, clients, readers, settings))
    except Exception as exc:
        with contextlib.suppress(Exception):
            conn.send(("failed", _reason(exc)))
        raise


class LoadRun:
    """The worker processes of one scenario run, driven step by step."""

    def __init__(
        self,
        clients: Sequence[ClientSpec],
        readers: Sequence[ReaderSpec],
        settings: LoadSettings,
        *,
        workers: int,
    ) -> None:
        self.clients = list(clients)
        self.readers = list(readers)
        self.settings = settings
        count = max(1, min(workers, max(1, len(self.clients) + len(self.readers))))
        # Round-robin, so each worker gets a share of senders, receivers and readers.
        self.shares = [(self.clients[i::count], self.readers[i::count]) for i in range(count)]
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.pipes: list[Connection] = []
        self.connect_reports: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.uvloop = False

    def launch(self) -> None:
        # Not plain fork: the parent has threads (monitor, log pumps), and forking
        # a threaded process can copy a held lock into the child. A forkserver
        # with this module preloaded starts workers in milliseconds.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["bench.loadgen"])
        for index, (clients, readers) in enumerate(self.shares):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(child_end, index, clients, readers, self.settings),
                name=f"bench-loadgen-{index}",
                daemon=True,
            )
            process.start()
            child_end.close()
            self.processes.append(process)
            self.pipes.append(parent_end)
        with contextlib.suppress(ImportError):
            import uvloop  # noqa: F401

            self.uvloop = True

    def _collect(self, expected: str, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        answers: list[dict[str, Any]] = []
        for index, pipe in enumerate(self.pipes):
            while not pipe.poll(0.2):
                if not self.processes[index].is_alive():
                    raise RuntimeError(f"load generator worker {index} died (exit {self.processes[index].exitcode})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"load generator worker {index} gave no {expected!r} within {timeout:.0f}s")
            kind, payload = pipe.recv()
            if kind != expected:
                raise RuntimeError(f"load generator worker {index} answered {kind}: {payload}")
            answers.append(payload)
        return answers

    def wait_ready(self, timeout: float) -> list[dict[str, Any]]:
        self.connect_reports = self._collect("ready", timeout)
        return self.connect_reports

    def start(self, start_at: float) -> None:
        for pipe in self.pipes:
            pipe.send(("start", start_at))

    def wait_done(self, timeout: float) -> list[dict[str, Any]]:
        self.results = self._collect("done", timeout)
        return self.results

    def worker_pids(self) -> list[int]:
        return [process.pid for process in self.processes if process.pid is not None]

    def shutdown(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                pipe.send(("close", None))
        for process in self.processes:
            process.join(25)
            if process.is_alive():
                process.terminate()
                process.join(5)
        for pipe in self.pipes:
            pipe.close()


def aggregate(run: LoadRun) -> dict[str, Any]:
    """The figures of one run from what the workers recorded."""
    settings = run.settings
    results = run.results
    connected = sum(report["connected"] for report in run.connect_reports)
    failures: Counter[str] = Counter()
    warmup_failures: Counter[str] = Counter()
    connect_hist = Histogram()
    connect_timeline: list[int] = []
    for report in run.connect_reports:
        for second, count in enumerate(report["timeline"]):
            while len(connect_timeline) <= second:
                connect_timeline.append(0)
            connect_timeline[second] += count
        failures.update(report["failed"])
        warmup_failures.update(report["warmup_failures"])
        connect_hist.merge(Histogram.from_wire(report["connect_ms"]))

    acked_by_sender: dict[int, int] = {}
    sent_total = acked_total = unanswered = 0
    refused: Counter[str] = Counter()
    chat_of_sender: dict[int, int] = {}
    for result in results:
        for sender in result["senders"]:
            bits = int.from_bytes(sender["acked"], "little")
            acked_by_sender[sender["sender_index"]] = bits
            chat_of_sender[sender["sender_index"]] = sender["chat_index"]
            sent_total += sender["sent"]
            acked_total += popcount(bits)
            unanswered += sender["unanswered"]
            refused.update(sender["errors"])

    expected = lost = received_unacked = closed_early = 0
    close_codes: Counter[str] = Counter()
    for result in results:
        for receiver in result["receivers"]:
            if receiver["closed_early"]:
                closed_early += 1
                close_codes[str(receiver["close_code"])] += 1
            got = receiver["received"]
            for sender_index, acked in acked_by_sender.items():
                if chat_of_sender[sender_index] != receiver["chat_index"] or sender_index == receiver["sender_index"]:
                    continue
                seen = int.from_bytes(got.get(sender_index, b""), "little")
                expected += popcount(acked)
                lost += popcount(acked & ~seen)
                received_unacked += popcount(seen & ~acked)

    def merged(key: str) -> Histogram:
        return Histogram.merged(Histogram.from_wire(result[key]) for result in results)

    def total(key: str) -> int:
        return sum(int(result[key]) for result in results)

    frames: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    history_status: Counter[str] = Counter()
    timeline: list[int] = []
    for result in results:
        frames.update(result["frames"])
        errors.update(result["error_codes"])
        history_status.update(result["history_status"])
        for second, count in enumerate(result["timeline"]):
            while len(timeline) <= second:
                timeline.append(0)
            timeline[second] += count

    history = merged("history")
    history_ok = history_status.get("200", 0)
    duration = settings.duration
    figures: dict[str, Any] = {
        "clients": len(run.clients),
        "connected": connected,
        "connect_failures": dict(failures),
        "connect_latency": connect_hist.summary_ms(),
        "connect_seconds": max((report["seconds"] for report in run.connect_reports), default=0.0),
        "connects_per_second_timeline": connect_timeline,
        "warmup_failures": dict(warmup_failures),
        "messages_sent": sent_total,
        "messages_acked": acked_total,
        "messages_refused": dict(refused),
        "messages_unanswered": unanswered,
        "deliveries_expected": expected,
        "deliveries": total("deliveries"),
        "deliveries_in_window": total("in_window"),
        "deliveries_per_s": round(total("in_window") / duration, 1) if duration else None,
        "lost": lost,
        "duplicates": total("duplicates"),
        "received_unacked": received_unacked,
        "echoes": total("echoes"),
        "unexpected_frames": total("unexpected"),
        "acks_unmatched": total("ack_unknown"),
        "latency": merged("latency").summary_ms(),
        "ack_latency": merged("ack_latency").summary_ms(),
        "send_lag": merged("send_lag").summary_ms(),
        "frames_received": dict(frames),
        "error_frames": dict(errors),
        "heartbeats_sent": total("heartbeats_sent"),
        "typing_sent": total("typing_sent"),
        "closed_during_run": closed_early,
        "close_codes": dict(close_codes),
        "open_at_end": total("open_at_end"),
        "deliveries_per_second_timeline": timeline,
        "loadgen": {
            "workers": len(results),
            "uvloop": run.uvloop,
            "cpu_s_window": round(sum(result["cpu_window_s"] for result in results), 2),
            "cpu_s_total": round(sum(result["cpu_total_s"] for result in results), 2),
        },
    }
    if run.readers:
        figures["history"] = {
            **history.summary_ms(),
            "reads_ok": history_ok,
            "reads_per_s": round(history_ok / duration, 1) if duration else None,
            "status": dict(history_status),
            "wrong_page_size": total("history_invalid"),
            "readers": len(run.readers),
        }
    return figures
