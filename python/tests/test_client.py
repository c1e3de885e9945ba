"""The Python client against a real nats-server, gateway and agent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lclstream
from conftest import EVENTS

FILTER = "lcls.mfx.mfxp1234.>"


def test_pull_into_numpy_and_resume(deployment) -> None:
    client = lclstream.Client(deployment.url, institution="ucsd")
    grant = client.request([FILTER], label="numpy")
    assert grant["resumed"] is False
    seen = []
    for event in client.stream(grant).events(idle_timeout=3):
        frame = event.arrays["jungfrau"]
        assert isinstance(frame, np.ndarray) and frame.dtype == np.uint16
        assert frame.shape == (16, 24)
        assert event.run == 7
        seen.append(event.index)
    assert sorted(seen) == list(range(EVENTS))
    again = client.request([FILTER], label="numpy")
    assert again["resumed"] is True
    assert list(client.stream(again).events(idle_timeout=2)) == []
    assert client.release(label="numpy")["consumer"] == grant["consumer"]


WORKER = textwrap.dedent("""
    import json, sys, os, lclstream
    url, label, crash_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = lclstream.Client(url, institution="ucsd")
    grant = client.request(["lcls.mfx.mfxp1234.>"], label=label)
    n = 0
    for batch in client.stream(grant, batch_messages=2).batches(idle_timeout=3):
        if crash_after and n == crash_after:
            print(json.dumps({"lost": [e.index for e in batch.events]}), flush=True)
            os._exit(9)  # killed mid-step: this batch is never acknowledged
        print(json.dumps([e.index for e in batch.events]), flush=True)
        n += 1
""")


def run_workers(url: str, label: str, crash_after: list) -> list:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, label, str(c)],
                              stdout=subprocess.PIPE, text=True) for c in crash_after]
    return [p.communicate(timeout=120)[0].splitlines() for p in procs]


def test_workers_share_without_overlap_or_gap(deployment) -> None:
    outputs = run_workers(deployment.url, "shared", [0, 0, 0])
    per_worker = [[i for line in out for i in json.loads(line)] for out in outputs]
    everything = [i for w in per_worker for i in w]
    assert sorted(everything) == list(range(EVENTS)), "no overlap and no gap"


def test_resume_after_a_killed_worker(deployment) -> None:
    first = run_workers(deployment.url, "crash", [2])[0]
    done = [i for line in first if not line.startswith("{") for i in json.loads(line)]
    lost = json.loads(next(line for line in first if line.startswith("{")))["lost"]
    assert lost and not set(lost) & set(done)
    # The consumer's ack wait brings the unacknowledged batch back: pull again
    # until everything arrived (bounded).
    client = lclstream.Client(deployment.url, institution="ucsd")
    grant = client.request([FILTER], label="crash")
    assert grant["resumed"] is True
    rest = [e.index for e in client.stream(grant).events(idle_timeout=10)]
    assert set(lost) <= set(rest)
    assert sorted(set(done) | set(rest)) == list(range(EVENTS))


@pytest.mark.parametrize("institution,call,code", [
    ("ucsd", lambda c: c.request(["lcls.cxi.other.>"]), "no_grant"),
    ("ucsd", lambda c: c.call("request", {"filters": "not a list"}), "bad_request"),
    ("nobody", lambda c: c.usage(), "unknown_institution"),
])
def test_refusals_are_exceptions_with_codes(deployment, institution, call, code) -> None:
    client = lclstream.Client(deployment.url, institution=institution)
    with pytest.raises(lclstream.GatewayError) as refused:
        call(client)
    assert refused.value.code == code


def test_quota_refusals(deployment) -> None:
    client = lclstream.Client(deployment.url, institution="tight")
    client.request([FILTER], label="a")
    with pytest.raises(lclstream.GatewayError) as refused:
        client.request([FILTER], label="b")
    assert refused.value.code == "quota_consumers"
