"""Publish jobs from Python: submit a run from facility storage, watch it
to the end, pull its data; cancel a running job; refusals keep their codes."""

from __future__ import annotations

import time

import numpy as np
import pytest

import lclstream
from conftest import JOB_EVENTS


def test_submit_watch_and_pull_a_job(deployment) -> None:
    client = lclstream.Client(deployment.url, institution="ucsd")
    view = client.submit_job("mfx", "mfxp1234", 5, batch_events=4, label="py-job")
    job = view["record"]["job"]
    assert view["record"]["state"] in ("queued", "running", "done")
    seen = []
    record = client.watch_job(job, timeout=120, on_update=seen.append)
    assert record["state"] == "done", record
    assert record["events"] == JOB_EVENTS
    assert seen and seen[-1] == record
    assert any(r["job"] == job for r in client.jobs(state="done"))
    events = list(client.job_stream(job).events(idle_timeout=5))
    assert sorted(e.index for e in events) == list(range(JOB_EVENTS))
    assert all(isinstance(a, np.ndarray) for e in events for a in e.arrays.values())


def test_cancel_a_running_job(deployment) -> None:
    client = lclstream.Client(deployment.url, institution="ucsd")
    job = client.submit_job("mfx", "mfxp1234", 6, batch_events=2)["record"]["job"]
    deadline = time.monotonic() + 60
    while True:
        record = client.job(job)["record"]
        if record["state"] == "running" and record["events"] > 0:
            break
        assert record["state"] in ("queued", "running"), record
        assert time.monotonic() < deadline, f"job never ran: {record}"
        time.sleep(0.2)
    cancelled = client.cancel_job(job)
    assert cancelled["record"]["state"] == "cancelled"
    assert not cancelled.get("grant"), "its consumer is released"
    assert client.watch_job(job, timeout=10)["state"] == "cancelled"
    with pytest.raises(lclstream.GatewayError):
        client.job_stream(job)


def test_job_refusals_keep_their_codes(deployment) -> None:
    client = lclstream.Client(deployment.url, institution="ucsd")
    with pytest.raises(lclstream.GatewayError) as refused:
        client.submit_job("cxi", "cxip9999", 1)
    assert refused.value.code == "no_grant"
    with pytest.raises(lclstream.GatewayError) as refused:
        client.submit_job("mfx", "mfxp1234", 5, events=(10, 2))
    assert refused.value.code == "bad_request"



def test_watch_job_follows_pushed_status(deployment) -> None:
    """Status is pushed by the gateway (and kept only when signed with its
    notices key, which `isolation_attacks.rs` checks against forgeries): with
    re-reads of the record only every 30 s, progress and the cancellation
    still arrive within seconds."""
    import threading

    client = lclstream.Client(deployment.url, institution="ucsd")
    job = client.submit_job("mfx", "mfxp1234", 6, batch_events=2)["record"]["job"]
    seen: list = []
    result: dict = {}
    watcher = threading.Thread(target=lambda: result.update(
        record=client.watch_job(job, timeout=60, poll=30.0, on_update=seen.append)))
    watcher.start()
    deadline = time.monotonic() + 30
    while not any(r["state"] == "running" and r["events"] > 0 for r in seen):
        assert time.monotonic() < deadline, f"no progress pushed: {seen}"
        assert watcher.is_alive(), result
        time.sleep(0.1)
    lclstream.Client(deployment.url, institution="ucsd").cancel_job(job)
    watcher.join(10)
    assert not watcher.is_alive(), "the cancellation was not pushed"
    assert result["record"]["state"] == "cancelled", result
    progress = [r["events"] for r in seen if r["state"] == "running"]
    assert progress == sorted(progress), progress
