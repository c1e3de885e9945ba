"""Fixtures: a real nats-server with JetStream, the `lclstream gateway`
(without the auth callout: the institution comes from the request subject)
and `lclstream agent` publishing a synthetic run, all on free loopback ports.

The binary is $LCLSTREAM_BIN or target/debug/lclstream (scripts/test builds it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("LCLSTREAM_BIN", ROOT / "target" / "debug" / "lclstream"))
EVENTS = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within 20 s")


POLICY = """
id = "{id}"
name = "test institution {id}"

[[grants]]
stream = "LCLS_MFX"
subjects = ["lcls.mfx.mfxp1234.>"]

[quotas]
requests_per_hour = {requests}
concurrent_consumers = {consumers}
bytes_per_day = 2_000_000_000

[quotas.pull]
max_batch = 64
max_bytes = 67_108_864
max_ack_pending = 256
inactive_threshold_secs = 3600
ack_wait_secs = 3
"""


class Deployment:
    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: run `cargo build -p lclstream` or set LCLSTREAM_BIN")
    tmp = tmp_path_factory.mktemp("deploy")
    procs: List[subprocess.Popen] = []
    try:
        port = free_port()
        server = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp / "js")],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "nats.log", "w"))
        procs.append(server)
        wait_port(port, server, "nats-server")
        url = f"nats://127.0.0.1:{port}"
        policies = tmp / "policies"
        policies.mkdir()
        (policies / "ucsd.toml").write_text(POLICY.format(id="ucsd", requests=1000, consumers=64))
        (policies / "tight.toml").write_text(POLICY.format(id="tight", requests=3, consumers=1))
        (tmp / "gateway.toml").write_text(
            f'[nats]\nurl = "{url}"\n[policies]\ndir = "policies"\nreload_secs = 0\n'
            f'[meter]\ninterval_ms = 500\n')
        procs.append(subprocess.Popen([str(BIN), "gateway", "--config", str(tmp / "gateway.toml")],
                                      stderr=open(tmp / "gateway.log", "w")))
        (tmp / "agent.toml").write_text(
            f'instrument = "mfx"\nexperiment = "mfxp1234"\nexit_when_done = true\n'
            f'[nats]\nurl = "{url}"\n[stream]\ncreate = true\n'
            f'[spool]\ndir = "{tmp / "spool"}"\n[batch]\nmax_events = 4\n'
            f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
            f'[[sources]]\nname = "jungfrau"\nrun = 7\n[sources.synthetic]\nfield = "jungfrau"\n'
            f'height = 16\nwidth = 24\ndtype = "u16"\nrate_hz = 0.0\nevents = {EVENTS}\nseed = 3\n')
        agent = subprocess.run([str(BIN), "agent", "--config", str(tmp / "agent.toml")],
                               capture_output=True, text=True, timeout=120)
        assert agent.returncode == 0, agent.stderr
        time.sleep(1.0)  # the gateway's request service subscribes at start-up
        yield Deployment(url)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
