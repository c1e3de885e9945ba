"""Benchmark of the Python package (opt-in; not part of the tests).

Usage (from the repository root, with the package installed in release mode
and a release `lclstream` binary):

    python3 python/bench/bench_client.py --bin target/release/lclstream

It starts nats-server, the gateway and an agent publishing the synthetic
detector (Poisson photons, read noise, peaks: nats/src/synthetic), a u16
frame (bitshuffle filter) and a f32 frame (byte shuffle filter) per event,
then measures in the same run:

1. decode: the same whole messages (fetched once with nats-py) decoded into
   numpy arrays by `lclstream.decode` and by the pure-Python reference
   decoder (integration/python/lclstream_wire.py: msgpack + lz4 + numpy);
2. pull: events per second from request to the last event, of the package
   (decode on 2 threads, arrays handed to numpy) and of Rust
   `lclstream pull --jsonl -` into /dev/null (decode on 2 threads; one short
   JSON line per event), each a fresh
   consumer over the whole run, each as its own process.

It prints one JSON line per measurement and a summary with the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "integration" / "python"))

POLICY = """
id = "bench"
name = "benchmark"
[[grants]]
stream = "LCLS_MFX"
subjects = ["lcls.mfx.mfxp1234.>"]
[quotas]
requests_per_hour = 1000
concurrent_consumers = 16
bytes_per_day = 1_000_000_000_000
[quotas.pull]
max_batch = 64
max_bytes = 67_108_864
max_ack_pending = 1024
inactive_threshold_secs = 3600
ack_wait_secs = 30
"""

PULL_PY = """
import sys, time, lclstream
url, n = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
client = lclstream.Client(url, institution="bench")
grant = client.request(["lcls.mfx.mfxp1234.>"])
seen = 0
for event in client.stream(grant, batch_messages=64, threads=2).events(idle_timeout=10):
    seen += len(event.arrays)
    if seen >= n:
        break
print(seen, time.perf_counter() - t0)
client.release(consumer=grant["consumer"])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after 30 s")


def agent_toml(url: str, spool: Path, events: int, height: int, width: int) -> str:
    sources = ""
    for name, dtype, seed in (("jungfrau", "u16", 3), ("epix", "f32", 4)):
        sources += (f'[[sources]]\nname = "{name}"\nrun = 7\n[sources.synthetic]\n'
                    f'field = "{name}"\nheight = {height}\nwidth = {width}\ndtype = "{dtype}"\n'
                    f'rate_hz = 0.0\nevents = {events}\nseed = {seed}\n')
    return (f'instrument = "mfx"\nexperiment = "mfxp1234"\nexit_when_done = true\n'
            f'[nats]\nurl = "{url}"\n[stream]\ncreate = true\n[spool]\ndir = "{spool}"\n'
            f'[batch]\nmax_events = 8\n[encode]\nthreads = 2\nmax_payload = 8388608\n'
            f'[encode.filters]\nintegers = "bitshuffle"\nfloats = "shuffle"\n'
            f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n' + sources)


async def fetch_messages(url: str, limit: int) -> List[Tuple[Dict[str, str], bytes]]:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe("lcls.mfx.mfxp1234.>", durable="bench-raw", stream="LCLS_MFX")
    out: List[Tuple[Dict[str, str], bytes]] = []
    while len(out) < limit:
        try:
            msgs = await sub.fetch(64, timeout=3)
        except Exception:  # nats.errors.TimeoutError: the stream is drained
            break
        for m in msgs:
            out.append((dict(m.headers or {}), bytes(m.data)))
            await m.ack()
    await nc.close()
    return out


def time_decode(name: str, decode: Any, messages: List[Tuple[Dict[str, str], bytes]],
                rounds: int) -> Dict[str, Any]:
    best = float("inf")
    events = raw = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        events = raw = 0
        for headers, payload in messages:
            for arrays in decode(headers, payload):
                for a in arrays:
                    raw += a.nbytes
                events += 1
        best = min(best, time.perf_counter() - t0)
    return {"measure": "decode", "decoder": name, "messages": len(messages), "events": events,
            "raw_mb": round(raw / 1e6, 1), "seconds": round(best, 3),
            "mb_per_s": round(raw / 1e6 / best, 1), "events_per_s": round(events / best, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "lclstream"))
    ap.add_argument("--events", type=int, default=1500, help="events per source")
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3, help="decode rounds (best is kept)")
    ap.add_argument("--pull-rounds", type=int, default=3, help="pulls of each client, alternating (best is kept)")
    args = ap.parse_args()

    import lclstream
    import lclstream_wire

    tmp = Path(tempfile.mkdtemp(prefix="lclstream-pybench-"))
    procs: List[subprocess.Popen] = []
    try:
        port = free_port()
        # 8 MB messages: a batch of 8 events is one message, not chunks.
        (tmp / "server.conf").write_text(
            f'listen: "127.0.0.1:{port}"\nmax_payload: 8MB\n'
            f'jetstream {{ store_dir: "{tmp / "js"}" }}\n')
        procs.append(subprocess.Popen(["nats-server", "-c", str(tmp / "server.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port)
        url = f"nats://127.0.0.1:{port}"
        (tmp / "policies").mkdir()
        (tmp / "policies" / "bench.toml").write_text(POLICY)
        (tmp / "gateway.toml").write_text(
            f'[nats]\nurl = "{url}"\n[policies]\ndir = "{tmp / "policies"}"\nreload_secs = 0\n')
        procs.append(subprocess.Popen([args.bin, "gateway", "--config", str(tmp / "gateway.toml")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        (tmp / "agent.toml").write_text(
            agent_toml(url, tmp / "spool", args.events, args.height, args.width))
        t0 = time.perf_counter()
        subprocess.run([args.bin, "agent", "--config", str(tmp / "agent.toml")], check=True,
                       capture_output=True, timeout=1800)
        total = 2 * args.events
        print(json.dumps({"measure": "publish", "events": total,
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        time.sleep(1.0)

        messages = asyncio.run(fetch_messages(url, 10 ** 9))
        whole = [(h, p) for h, p in messages if "Lclstream-Chunk" not in h]
        stored = sum(len(p) for _, p in messages)
        print(json.dumps({"measure": "stream", "messages": len(messages),
                          "chunked_skipped": len(messages) - len(whole),
                          "stored_mb": round(stored / 1e6, 1)}), flush=True)

        def native(h: Dict[str, str], p: bytes) -> Any:
            return (list(e.arrays.values()) for e in lclstream.decode(h, p).events)

        def pure(h: Dict[str, str], p: bytes) -> Any:
            return (list(e["arrays"].values()) for e in lclstream_wire.decode(h, p)["events"])

        results = {}
        for name, fn in (("package", native), ("pure-python", pure)):
            r = time_decode(name, fn, whole, args.rounds)
            results[name] = r
            print(json.dumps(r), flush=True)

        pulls = {}
        for name in ("rust", "package") * args.pull_rounds:
            if name == "rust":
                cmd = [args.bin, "pull", "--url", url, "--institution", "bench", "--subject",
                       "lcls.mfx.mfxp1234.>", "--jsonl", "-", "--max-events", str(total),
                       "--idle-timeout", "10", "--decode-threads", "2", "--release"]
            else:
                cmd = [sys.executable, "-c", PULL_PY, url, str(total)]
            t0 = time.perf_counter()
            # Rust's lines go to /dev/null through stdout (a JSONL file would
            # be fsynced per batch, which the package does not do).
            out = subprocess.run(cmd, stdout=subprocess.PIPE if name == "package"
                                 else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 timeout=1800)
            seconds = time.perf_counter() - t0
            if out.returncode != 0:
                raise RuntimeError(f"{name} pull failed: {out.stderr}")
            rate = total / seconds
            pulls[name] = max(pulls.get(name, 0.0), rate)
            print(json.dumps({"measure": "pull", "client": name, "events": total,
                              "seconds": round(seconds, 2), "events_per_s": round(rate, 1),
                              "says": (out.stderr.strip().splitlines() or [""])[-1][:300]}),
                  flush=True)

        summary = {
            "decode_speedup_vs_pure_python": round(
                results["package"]["mb_per_s"] / results["pure-python"]["mb_per_s"], 2),
            "pull_rate_vs_rust": round(pulls["package"] / pulls["rust"], 2),
            "frame": f"{args.height}x{args.width} u16 (bitshuffle) + f32 (shuffle)",
        }
        print(json.dumps({"summary": summary}), flush=True)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
