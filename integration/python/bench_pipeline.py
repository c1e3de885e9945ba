#!/usr/bin/env python3
"""The lclstream pipeline written the way a Python user would, for `lclstream bench python`.

    python3 bench_pipeline.py publish --url URL --file run.h5 --subject lcls.bench.bench1.2.py
    python3 bench_pipeline.py pull --url URL --stream LCLS_BENCH --filter 'lcls.bench.bench1.1.>' \
        --durable py-pull --events 400

publish: h5py reads a smalldata-layout file (`/jungfrau/image`, `/timestamp_ns`,
per-shot scalars) a batch at a time, builds wire format v1 batches
(docs/wire-format.md) with msgpack, compresses them with lz4 (no shuffle), and
publishes each with nats-py JetStream, awaiting its ack.

pull: a durable pull consumer fetched in batches; every message is decoded with
lclstream_wire.decode (msgpack, lz4, numpy) and acknowledged.

Both print one JSON line: events, raw_bytes (uncompressed MessagePack for publish,
event array bytes for pull), wire_bytes, secs.
"""

import argparse
import asyncio
import json
import os
import sys
import time
import zlib

import h5py
import lz4.block
import msgpack
import nats
import nats.errors

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lclstream_wire import Reassembler, decode  # noqa: E402

SCALARS = ("photon_energy_ev", "pulse_energy_mj", "pulse_id")


def batch_document(experiment, run, source, first, images, times, scalars):
    """One wire format v1 batch as a msgpack-ready dict."""
    events = []
    for k in range(images.shape[0]):
        events.append(
            {
                "index": first + k,
                "time_ns": int(times[k]),
                "scalars": {name: values[k].item() for name, values in scalars.items()},
                "arrays": {
                    "jungfrau": {
                        "dtype": images.dtype.str,
                        "shape": list(images.shape[1:]),
                        "data": images[k].tobytes(),
                        "filter": "none",
                    }
                },
            }
        )
    last = first + len(events) - 1
    return {
        "schema": 1,
        "experiment": experiment,
        "run": run,
        "source": source,
        "first": first,
        "last": last,
        "count": len(events),
        "events": events,
    }


async def publish(args):
    nc = await nats.connect(args.url, max_reconnect_attempts=1)
    js = nc.jetstream(timeout=30)
    _, _, experiment, run, source = args.subject.split(".")
    run = int(run)
    raw_bytes = wire_bytes = events = 0
    started = time.perf_counter()
    with h5py.File(args.file, "r") as f:
        images = f["jungfrau/image"]
        times = f["timestamp_ns"]
        total = images.shape[0]
        for first in range(0, total, args.batch_events):
            last = min(first + args.batch_events, total)
            block = images[first:last]
            scalars = {name: f[name][first:last] for name in SCALARS}
            doc = batch_document(experiment, run, source, first, block, times[first:last], scalars)
            raw = msgpack.packb(doc, use_bin_type=True)
            payload = lz4.block.compress(raw, store_size=True)
            batch_id = f"{experiment}/{source}/r{run}/{first}-{last - 1}"
            headers = {
                "Content-Type": "application/vnd.lclstream.batch+msgpack",
                "Content-Encoding": "lz4",
                "Lclstream-Schema": "1",
                "Lclstream-Batch-Id": batch_id,
                "Lclstream-Events": f"{first}-{last - 1}",
                "Lclstream-Event-Count": str(last - first),
                "Lclstream-Raw-Size": str(len(raw)),
                "Lclstream-Checksum": f"crc32:{zlib.crc32(raw):08x}",
                "Nats-Msg-Id": batch_id,
            }
            await js.publish(args.subject, payload, headers=headers)
            raw_bytes += len(raw)
            wire_bytes += len(payload)
            events += last - first
    secs = time.perf_counter() - started
    await nc.close()
    return {"events": events, "raw_bytes": raw_bytes, "wire_bytes": wire_bytes, "secs": secs}


async def pull(args):
    async def report(e):
        print(f"nats error: {e!r}", file=sys.stderr)

    nc = await nats.connect(args.url, max_reconnect_attempts=1, error_cb=report)
    js = nc.jetstream(timeout=30)
    sub = await js.pull_subscribe(args.filter, durable=args.durable, stream=args.stream)
    reassembler = Reassembler()
    events = array_bytes = wire_bytes = messages_seen = 0
    started = finished = time.perf_counter()
    last_message = time.monotonic()
    while events < args.events and time.monotonic() - last_message < args.idle_timeout:
        try:
            # At most ~32 MB per fetch: while this single thread decodes, the
            # server buffers what was asked for, and closes the connection of
            # a client that falls 64 MB behind (realistic batches are ~2 MB).
            size = wire_bytes // messages_seen if messages_seen else 0
            batch = max(1, min(args.batch, (32 << 20) // size)) if size else 1
            messages = await sub.fetch(batch, timeout=5)
        except nats.errors.TimeoutError:
            continue
        for msg in messages:
            last_message = time.monotonic()
            messages_seen += 1
            wire_bytes += len(msg.data)
            whole = reassembler.push(msg.headers, msg.data)
            if whole is not None:
                batch = decode(*whole)
                for event in batch["events"]:
                    events += 1
                    array_bytes += sum(a.nbytes for a in event["arrays"].values())
                finished = time.perf_counter()
            await msg.ack()
    # Until the last event was decoded, as for the Rust partner.
    secs = (finished if events else time.perf_counter()) - started
    await sub.unsubscribe()
    await nc.close()
    return {"events": events, "raw_bytes": array_bytes, "wire_bytes": wire_bytes, "secs": secs}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("publish", help="HDF5 file -> JetStream")
    p.add_argument("--url", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--subject", required=True, help="lcls.<instrument>.<experiment>.<run>.<source>")
    p.add_argument("--batch-events", type=int, default=16)
    q = sub.add_parser("pull", help="JetStream -> decoded events")
    q.add_argument("--url", required=True)
    q.add_argument("--stream", required=True)
    q.add_argument("--filter", required=True)
    q.add_argument("--durable", required=True)
    q.add_argument("--events", type=int, required=True)
    q.add_argument("--batch", type=int, default=64)
    q.add_argument("--idle-timeout", type=float, default=10.0)
    args = parser.parse_args()
    if args.mode == "publish" and args.batch_events < 1:
        parser.error("--batch-events must be positive")
    result = asyncio.run(publish(args) if args.mode == "publish" else pull(args))
    print(json.dumps(result))
    if args.mode == "pull" and result["events"] < args.events:
        sys.exit(f"pull: {result['events']} of {args.events} events before {args.idle_timeout} s without a message")


if __name__ == "__main__":
    main()
