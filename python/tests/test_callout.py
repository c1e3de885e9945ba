"""Behind the auth callout, as in production (`lclstream init`): the
institution is who its nkey says, pulls go through the `PARTNERS` account,
and every refusal code the gateway can return reaches Python as a
`GatewayError` with that code. A wrong seed file or institution is a clear
exception at connection time.
"""

from __future__ import annotations

import time
from typing import Callable

import pytest

import lclstream
from conftest import EVENTS

MFX = "lcls.mfx.mfxp1234.>"
EXAMPLE = "example-university"


def client(d, institution: str) -> lclstream.Client:
    return lclstream.Client(d.url, d.seed(institution), institution)


def refused(call: Callable[[], object]) -> lclstream.GatewayError:
    with pytest.raises(lclstream.GatewayError) as caught:
        call()
    assert caught.value.reason, "a refusal explains itself"
    return caught.value


def eventually_refused(call: Callable[[], object], code: str, within: float = 20.0
                       ) -> lclstream.GatewayError:
    """Retries ``call`` (bounded) until the gateway refuses it with ``code``:
    for refusals that follow the meter or a policy reload."""
    deadline = time.monotonic() + within
    while True:
        try:
            call()
        except lclstream.GatewayError as e:
            if e.code == code or time.monotonic() > deadline:
                return e
        if time.monotonic() > deadline:
            pytest.fail(f"no {code} refusal within {within} s")
        time.sleep(0.3)


def test_pull_through_the_callout(callout_deployment) -> None:
    c = client(callout_deployment, EXAMPLE)
    grant = c.request([MFX], label="callout-pull")
    assert grant["api_prefix"] == "$JS.lclstream.API"
    indices = sorted(e.index for e in c.stream(grant).events(idle_timeout=5))
    assert indices == list(range(EVENTS))
    c.release(label="callout-pull")


def test_no_grant(callout_deployment) -> None:
    c = client(callout_deployment, EXAMPLE)
    assert refused(lambda: c.request(["lcls.cxi.cxip9999.>"])).code == "no_grant"


def test_bad_request(callout_deployment) -> None:
    c = client(callout_deployment, EXAMPLE)
    assert refused(lambda: c.call("request", {"filters": "not a list"})).code == "bad_request"
    c.request([MFX], label="conflict")
    # The same label with other filters.
    e = refused(lambda: c.request(["lcls.mfx.mfxp1234.7.>"], label="conflict"))
    assert e.code == "bad_request" and "label" in e.reason
    c.release(label="conflict")
    assert refused(lambda: c.request([MFX], start={"sequence": -1})).code == "bad_request"


def test_unknown_dataset(callout_deployment) -> None:
    # Granted, but nothing was ever published there: the stream does not exist.
    e = refused(lambda: client(callout_deployment, "nostream").request(["lcls.cxi.cxip9999.>"]))
    assert e.code == "bad_request" and "does not exist" in e.reason


def test_quota_consumers(callout_deployment) -> None:
    c = client(callout_deployment, "tight")
    c.request([MFX], label="only")
    assert refused(lambda: c.request([MFX], label="second")).code == "quota_consumers"
    # Releasing the slot makes room again.
    c.release(label="only")
    c.request([MFX], label="second")
    c.release(label="second")


def test_quota_requests(callout_deployment) -> None:
    c = client(callout_deployment, "hourly")
    c.request([MFX], label="first")
    c.release(label="first")
    assert refused(lambda: c.request([MFX], label="again")).code == "quota_requests"


def test_quota_bytes(callout_deployment) -> None:
    c = client(callout_deployment, "meagre")  # 1 byte a day
    grant = c.request([MFX], label="meagre")
    assert list(c.stream(grant).batches(max_batches=1, idle_timeout=5))
    # The meter counts the delivered bytes within a few of its intervals.
    e = eventually_refused(lambda: c.request([MFX], label="meagre"), "quota_bytes")
    assert e.code == "quota_bytes"
    assert c.usage()["bytes"]["used"] > 1


def test_withdrawn_institution(callout_deployment) -> None:
    # The facility withdraws a policy while the institution is connected:
    # the gateway answers `unknown_institution` until the callout has
    # disconnected the withdrawn key (whichever comes first after the
    # reload), and the key cannot connect again.
    c = client(callout_deployment, "leaving")
    c.usage()
    (callout_deployment.policies / "leaving.toml").unlink()
    deadline = time.monotonic() + 20
    failure = None
    while failure is None:
        assert time.monotonic() < deadline, "the withdrawn policy still answers after 20 s"
        try:
            c.usage()
            time.sleep(0.3)
        except (lclstream.GatewayError, ConnectionError) as e:
            failure = e
    if isinstance(failure, lclstream.GatewayError):
        assert failure.code == "unknown_institution"
    with pytest.raises(lclstream.AuthenticationError, match="leaving"):
        client(callout_deployment, "leaving")


def test_wrong_seed_file_or_institution(callout_deployment, tmp_path) -> None:
    d = callout_deployment
    with pytest.raises(FileNotFoundError, match="seed file"):
        lclstream.Client(d.url, tmp_path / "missing.nk", EXAMPLE)
    garbage = tmp_path / "garbage.nk"
    garbage.write_text("not a seed\n")
    with pytest.raises(ValueError, match="nkey seed"):
        lclstream.Client(d.url, garbage, EXAMPLE)
    # Another institution's seed: the callout refuses the connection.
    with pytest.raises(lclstream.AuthenticationError, match="tight"):
        lclstream.Client(d.url, d.seed(EXAMPLE), "tight")
    # An institution without a policy.
    with pytest.raises(lclstream.AuthenticationError, match="nobody"):
        lclstream.Client(d.url, d.seed(EXAMPLE), "nobody")
