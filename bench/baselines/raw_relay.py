"""Baseline (a): the smallest WebSocket chat relay Python can run, in one process.

``ws://host:port/room/<name>``: every connection joins the room named in its
path. A ``send`` frame is broadcast to the whole room as a ``message`` frame
(the sender included, like the project) and then acked to the sender; a
``typing`` frame goes to the others; anything else (``heartbeat``) is dropped.
No authentication, no storage, no ordering guarantees beyond one process: this
is the ceiling the other targets are compared with.

    python -m bench.baselines.raw_relay --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.common import raise_nofile_limit

rooms: dict[str, set[ServerConnection]] = {}


async def relay(connection: ServerConnection) -> None:
    room = connection.request.path.rstrip("/").rsplit("/", 1)[-1] if connection.request else ""
    members = rooms.setdefault(room, set())
    members.add(connection)
    try:
        async for raw in connection:
            try:
                frame = orjson.loads(raw)
                kind = frame.get("type")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if kind == "send":
                client_msg_id = frame.get("client_msg_id")
                message = {"type": "message", "room": room, "client_msg_id": client_msg_id, "body": frame.get("body")}
                # Encoded once for the whole room; broadcast() writes without
                # waiting for slow readers (no backpressure, by design).
                broadcast(members, orjson.dumps(message), text=True)
                await connection.send(orjson.dumps({"type": "ack", "client_msg_id": client_msg_id}), text=True)
            elif kind == "typing":
                others = [member for member in members if member is not connection]
                broadcast(others, orjson.dumps({"type": "typing", "room": room}), text=True)
    finally:
        members.discard(connection)
        if not members:
            rooms.pop(room, None)


async def serve_forever(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    # compression=None: daphne does not negotiate permessage-deflate either.
    async with serve(relay, host, port, compression=None, max_size=2**20, backlog=1024):
        print(f"raw relay listening on ws://{host}:{port}/room/<name>", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    raise_nofile_limit()
    # The ceiling on the same event loop as this project's servers (uvloop).
    uvloop.run(serve_forever(options.host, options.port))


if __name__ == "__main__":
    main()
