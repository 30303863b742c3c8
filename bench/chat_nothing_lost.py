"""Scenario: nothing acknowledged is lost while a chat replica restarts under load.

20 clients spread over two chat processes each send 500 messages to one shared room (a
window of 10 unacknowledged each). When 40% are acknowledged one replica is stopped with
SIGTERM (1012 to its clients, in batches) - or killed with SIGKILL (`--kill`) - and a new
one is started; clients reconnect to a live replica, join with `since` and resend what was
not acked. Afterwards: every acknowledged message is in MongoDB exactly once, and every
client saw every message of the room exactly once, in seq order.

    python -m bench.chat_nothing_lost [--clients 20] [--messages 500] [--kill]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from pymongo import AsyncMongoClient

from bench.chat_load import run_load
from bench.chat_support import chat_bench
from bench.harness.stats import percentile


async def scenario(clients: int, messages: int, kill: bool) -> dict[str, Any]:
    async with chat_bench() as bench:
        fast = {"MESH_CHAT_RATE_PER_SECOND": "1000", "MESH_CHAT_RATE_BURST": "1000"}
        one = await bench.start_chat(**fast)
        two = await bench.start_chat(**fast)
        users = [bench.user() for _ in range(clients)]
        room = await bench.create_room(users[0][1], [u for u, _ in users[1:]])
        urls = [one.ws, two.ws]

        async def restart() -> None:
            urls.remove(two.ws)
            bench.stop_chat(two, signal.SIGKILL if kill else signal.SIGTERM)
            three = await bench.start_chat(**fast)
            urls.append(three.ws)

        result = await run_load(
            users, room, lambda: urls, messages=messages, restart=restart, restart_after=0.4,
            timeout=900,
        )  # fmt: skip
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(bench.backing.mongo_url)
        try:
            collection = mongo[f"{bench.namespace}chat"]["messages"]
            stored = await collection.find({"room": room, "hole": {"$ne": True}}).to_list()
            holes = await collection.count_documents({"room": room, "hole": True})
        finally:
            await mongo.close()
    keys = [(m["userId"], m["clientMsgId"]) for m in stored]
    seqs = sorted(int(m["seq"]) for m in stored)
    checks = {
        "stored exactly once": len(keys) == len(set(keys)) == clients * messages,
        "every stored message acked with its seq": set(result.acked) == set(keys)
        and all(result.acked[(m["userId"], m["clientMsgId"])] == m["seq"] for m in stored),
        "every client saw every message once, in seq order": all(
            seen == seqs for seen in result.seen
        ),
    }
    total = clients * messages
    return {
        "clients": clients,
        "messages": total,
        "restart": "SIGKILL" if kill else "SIGTERM",
        "seconds": round(result.elapsed, 2),
        "messages_per_second": round(total / result.elapsed, 1),
        "reconnects": result.reconnects,
        "holes (retried sends)": holes,
        "ack_p50_ms": round(percentile(result.latencies, 0.5) * 1000, 1),
        "ack_p99_ms": round(percentile(result.latencies, 0.99) * 1000, 1),
        "checks": checks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    args = parser.parse_args()
    report = asyncio.run(scenario(args.clients, args.messages, args.kill))
    for key, value in report.items():
        print(f"{key}: {value}")
    if not all(report["checks"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
