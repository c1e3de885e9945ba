"""Pulls every message of a durable consumer with nats-py and prints a JSON summary.

Usage: python3 decode_stream.py NATS_URL STREAM CONSUMER EXPECTED_MESSAGES

The summary lists, per decoded batch, its id, event indices, scalars and a
sum and shape per array, so a test can compare it with what was published.
"""

import asyncio
import json
import sys

import nats

from lclstream_wire import Reassembler, decode


async def main(url, stream, consumer, expected):
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(consumer, stream=stream)
    reassembler = Reassembler()
    batches, received = [], 0
    while received < expected:
        for msg in await sub.fetch(min(16, expected - received), timeout=10):
            received += 1
            whole = reassembler.push(msg.headers, msg.data)
            if whole is not None:
                batch = decode(*whole)
                batches.append(summarize(batch, whole[0]))
            await msg.ack()
    await nc.close()
    print(json.dumps(batches))


def summarize(batch, headers):
    return {
        "id": headers["Lclstream-Batch-Id"],
        "run": batch["run"],
        "first": batch["first"],
        "last": batch["last"],
        "events": [
            {
                "index": e["index"],
                "scalars": e["scalars"],
                "arrays": {
                    name: {"dtype": a.dtype.str, "shape": list(a.shape), "sum": int(a.astype("int64").sum())}
                    for name, a in e["arrays"].items()
                },
            }
            for e in batch["events"]
        ],
    }


if __name__ == "__main__":
    url, stream, consumer, expected = sys.argv[1:5]
    asyncio.run(main(url, stream, consumer, int(expected)))
