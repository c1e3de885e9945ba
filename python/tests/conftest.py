"""Fixtures, all on free loopback ports with the real binaries:

- ``deployment``: nats-server with JetStream, the `lclstream gateway`
  without the auth callout (the institution comes from the request subject),
  `lclstream agent` publishing a synthetic run, and a publish-job worker.
- ``callout_deployment``: the production set-up written by `lclstream init`
  (accounts, auth callout, encrypted, nkeys per institution), with extra
  institutions whose policies make every refusal code reachable.

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
    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root


def wait_log(path: Path, needle: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {path.read_text()}")
        time.sleep(0.1)
    raise RuntimeError(f"no {needle!r} from {what} within 60 s: {path.read_text()}")


JOB_EVENTS = 30

WORKER = """
name = "w1"
instruments = ["mfx"]
[nats]
url = "{url}"
[storage]
root = "{root}"
preset = "sample"
read_chunk_events = 4
max_events_per_sec = {rate}
[queue]
ack_wait_secs = 2
heartbeat_ms = 400
max_deliver = 4
progress_ms = 100
"""


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
        # Facility storage for publish jobs: run 5 (30 events), run 6 (2000
        # events, for cancelling mid-way), and a worker that paces events.
        data = tmp / "data"
        for run, events in ((5, JOB_EVENTS), (6, 2000)):
            (data / "mfxp1234").mkdir(parents=True, exist_ok=True)
            subprocess.run([str(BIN), "sample", "--layout", "sample", "--events", str(events),
                            "--out", str(data / "mfxp1234" / f"run{run:04}-s00.h5")],
                           check=True, capture_output=True, timeout=120)
        (tmp / "worker.toml").write_text(WORKER.format(url=url, root=data, rate="200.0"))
        procs.append(subprocess.Popen([str(BIN), "worker", "--config", str(tmp / "worker.toml")],
                                      stderr=open(tmp / "worker.log", "w")))
        time.sleep(1.0)  # the gateway's request service subscribes at start-up
        yield Deployment(url, tmp)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


CALLOUT_POLICY = """
id = "{id}"
name = "test institution {id}"

[[keys]]
public = "{public}"
comment = "test key"
revoked = false

[[grants]]
stream = "{stream}"
subjects = ["{subjects}"]

[quotas]
requests_per_hour = {requests}
concurrent_consumers = {consumers}
bytes_per_day = {bytes}

[quotas.pull]
max_batch = 64
max_bytes = 67108864
max_ack_pending = 256
inactive_threshold_secs = 3600
ack_wait_secs = 3
"""

# Institutions of the callout deployment, each making one refusal reachable.
CALLOUT_INSTITUTIONS = {
    # id: (stream, subjects, requests_per_hour, concurrent_consumers, bytes_per_day)
    "tight": ("LCLS_MFX", "lcls.mfx.mfxp1234.>", 1000, 1, 2_000_000_000),
    "hourly": ("LCLS_MFX", "lcls.mfx.mfxp1234.>", 1, 8, 2_000_000_000),
    "meagre": ("LCLS_MFX", "lcls.mfx.mfxp1234.>", 1000, 8, 1),
    "nostream": ("LCLS_CXI", "lcls.cxi.cxip9999.>", 1000, 8, 2_000_000_000),
    "leaving": ("LCLS_MFX", "lcls.mfx.mfxp1234.>", 1000, 8, 2_000_000_000),
}


class CalloutDeployment:
    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root
        self.keys = root / "keys"
        self.policies = root / "policies"

    def seed(self, institution: str) -> Path:
        return self.keys / f"{institution}.nk"


@pytest.fixture(scope="session")
def callout_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CalloutDeployment]:
    """`lclstream init` (as an operator does), started as its README says,
    with a synthetic run published by the agent under its own key."""
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: run `cargo build -p lclstream` or set LCLSTREAM_BIN")
    tmp = tmp_path_factory.mktemp("callout")
    root = tmp / "lclstream"
    port = free_port()
    subprocess.run([str(BIN), "init", str(root), "--port", str(port),
                    "--monitor-port", str(free_port()), "--storage-gib", "4", "--stream-gib", "1",
                    "--gateway-metrics", f"127.0.0.1:{free_port()}"],
                   check=True, capture_output=True, timeout=60)
    for institution, (stream, subjects, requests, consumers, budget) in \
            CALLOUT_INSTITUTIONS.items():
        subprocess.run([str(BIN), "keygen", "--kind", "institution", "--out", str(root / "keys"),
                        "--name", institution], check=True, capture_output=True, timeout=30)
        public = (root / "keys" / f"{institution}.pub").read_text().strip()
        (root / "policies" / f"{institution}.toml").write_text(CALLOUT_POLICY.format(
            id=institution, public=public, stream=stream, subjects=subjects,
            requests=requests, consumers=consumers, bytes=budget))
    gateway_toml = root / "gateway.toml"
    text = gateway_toml.read_text().replace("reload_secs = 5", "reload_secs = 1")
    gateway_toml.write_text(text + "\n[meter]\ninterval_ms = 300\n")
    url = f"nats://127.0.0.1:{port}"
    (root / "agent.toml").write_text(
        f'instrument = "mfx"\nexperiment = "mfxp1234"\nexit_when_done = true\n'
        f'[nats]\nurl = "{url}"\nnkey_seed_file = "{root / "keys" / "daq.nk"}"\n'
        f'[stream]\ncreate = true\nmax_bytes = 1073741824\nreplicas = 1\n'
        f'[spool]\ndir = "{root / "agent" / "spool"}"\n[batch]\nmax_events = 4\n'
        f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[[sources]]\nname = "jungfrau"\nrun = 7\n[sources.synthetic]\nfield = "jungfrau"\n'
        f'height = 16\nwidth = 24\ndtype = "u16"\nrate_hz = 0.0\nevents = {EVENTS}\nseed = 3\n')
    procs: List[subprocess.Popen] = []
    try:
        server = subprocess.Popen(["nats-server", "-c", str(root / "nats" / "server.conf")],
                                  stdout=subprocess.DEVNULL, stderr=open(tmp / "nats.log", "w"))
        procs.append(server)
        wait_log(tmp / "nats.log", "Server is ready", server, "nats-server")
        gateway = subprocess.Popen([str(BIN), "gateway", "--config", str(gateway_toml)],
                                   stdout=open(tmp / "gateway.log", "w"), stderr=subprocess.STDOUT)
        procs.append(gateway)
        wait_log(tmp / "gateway.log", "gateway running", gateway, "gateway")
        agent = subprocess.run([str(BIN), "agent", "--config", str(root / "agent.toml")],
                               capture_output=True, text=True, timeout=120)
        assert agent.returncode == 0, agent.stderr
        yield CalloutDeployment(url, root)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
