#!/usr/bin/env python3
"""Pull a dataset through the lclstream gateway with nats-py, msgpack, lz4 and numpy.

The Python counterpart of `lclstream pull` (see docs/gateway-protocol.md):

    python3 partner_pull.py --url nats://host:4222 --institution ucsd \
        --seed ucsd.nk --subject 'lcls.mfx.mfxp1234.>' --label run42 --idle-timeout 10

1. connect with the institution's nkey seed and its private inbox prefix
   `_INBOX.<institution>` (the only inbox it may subscribe to);
2. ask the gateway for a dataset on `lclstream.gateway.<institution>.request`;
3. bind to the durable consumer the gateway created (no stream info, no
   consumer creation: partners are not allowed either);
4. fetch batches, reassemble chunks, decode, print one JSON line per event,
   and acknowledge each message only after its batch is processed.

Asking again with the same --label resumes where the consumer left off.
--seed needs the `nkeys` package as well (nats-py signs the server's nonce with it).
Exits after --max-events events or --idle-timeout seconds without a message.
"""

import argparse
import asyncio
import json
import sys
import time

import nats
import nats.errors

from lclstream_wire import Reassembler, decode


def event_line(batch, event):
    """One JSON line per event: identity, scalars, array dtypes and shapes."""
    return {
        "experiment": batch["experiment"],
        "run": batch["run"],
        "source": batch["source"],
        "index": event["index"],
        "time_ns": event["time_ns"],
        "scalars": event.get("scalars", {}),
        "arrays": {
            name: {"dtype": a.dtype.str, "shape": list(a.shape), "sum": int(a.sum())}
            for name, a in event["arrays"].items()
        },
    }


async def request(nc, institution, verb, body):
    """Sends one gateway request and returns its result, or exits on a refusal."""
    subject = f"lclstream.gateway.{institution}.{verb}"
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=15)
    answer = json.loads(reply.data)
    if answer.get("status") != "ok":
        error = answer.get("error", {})
        sys.exit(f"gateway refused: {error.get('code')}: {error.get('reason')}")
    return answer["result"]


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--institution", required=True)
    parser.add_argument("--seed", help="file holding the institution's nkey seed")
    parser.add_argument("--subject", action="append", required=True)
    parser.add_argument("--start", default="all", help="all, new or a stream sequence")
    parser.add_argument("--label")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-events", type=int)
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    args = parser.parse_args()

    options = {"servers": [args.url], "inbox_prefix": f"_INBOX.{args.institution}"}
    if args.seed:
        try:
            import nkeys  # noqa: F401  (nats-py needs it to sign with the seed)
        except ImportError:
            sys.exit("--seed needs the nkeys package: pip install nkeys")
        options["nkeys_seed"] = args.seed
    nc = await nats.connect(**options)

    start = args.start if args.start in ("all", "new") else {"sequence": int(args.start)}
    body = {"filters": args.subject, "start": start}
    if args.label:
        body["label"] = args.label
    grant = await request(nc, args.institution, "request", body)
    print(
        f"{'resuming' if grant['resumed'] else 'created'} {grant['consumer']} on {grant['stream']}",
        file=sys.stderr,
    )

    # Behind the auth callout the institution's account reaches JetStream
    # through the prefix the grant names ($JS.lclstream.API, the domain
    # "lclstream"); without it, the plain $JS.API.
    js = nc.jetstream(prefix=grant.get("api_prefix", "$JS.API"))
    inbox = f"_INBOX.{args.institution}.".encode()
    sub = await js.pull_subscribe_bind(grant["consumer"], grant["stream"], inbox_prefix=inbox)
    batch_size = max(1, min(args.batch, grant["pull"]["max_batch"]))
    reassembler = Reassembler()
    held = {}
    events = batches = 0
    last = time.monotonic()
    while args.max_events is None or events < args.max_events:
        left = args.idle_timeout - (time.monotonic() - last)
        if left <= 0:
            break
        try:
            messages = await sub.fetch(batch_size, timeout=max(0.2, min(2.0, left)))
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            # nats-py raises its own TimeoutError when the pull request
            # expires empty, and asyncio's when its wait times out first.
            continue
        for msg in messages:
            last = time.monotonic()
            headers = msg.headers or {}
            batch_id = headers.get("Lclstream-Batch-Id", "")
            held.setdefault(batch_id, []).append(msg)
            whole = reassembler.push(headers, msg.data)
            if whole is None:
                continue
            batch = decode(*whole)
            for event in batch["events"]:
                print(json.dumps(event_line(batch, event)))
                events += 1
            sys.stdout.flush()
            batches += 1
            for m in held.pop(batch_id):
                await m.ack_sync()
    summary = {"consumer": grant["consumer"], "resumed": grant["resumed"], "events": events, "batches": batches}
    print(json.dumps(summary), file=sys.stderr)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
