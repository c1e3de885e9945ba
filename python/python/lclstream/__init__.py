"""Partner client of lclstream: request datasets from the gateway and pull
them as numpy arrays.

Decoding uses the Rust wire decoder (one implementation of the format) on
several threads outside the GIL; each array's buffer is the decoded buffer
itself (no copy). Delivery is at least once: a batch is acknowledged only
when the caller asks for the next one (or calls :meth:`Stream.ack`), so a
process killed mid-step gets the batch redelivered to whoever pulls next.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Generator, Iterator, List, Optional, Sequence, Tuple, Union

from ._native import NativeClient, NativePuller
from ._native import decode as _native_decode

__all__ = ["Client", "GatewayError", "AuthenticationError", "JobTimeout", "Stream", "Batch",
           "Event", "StreamDataset", "decode"]

JOB_TERMINAL_STATES = ("done", "failed", "cancelled")


class GatewayError(Exception):
    """The gateway refused a request; ``code`` is its machine-readable reason
    (``no_grant``, ``quota_requests``, ``quota_consumers``, ``quota_bytes``,
    ``bad_request``, ``unknown_institution``, ``internal``)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class AuthenticationError(ConnectionError):
    """The server refused the connection: the seed file does not hold a key
    of ``institution`` (or the key is revoked, or the institution has no
    policy). Check the seed file and the institution id."""


class JobTimeout(TimeoutError):
    """:meth:`Client.watch_job` gave up before the job ended; ``record`` is
    the last record seen."""

    def __init__(self, job: str, record: Dict[str, Any], timeout: float) -> None:
        super().__init__(f"job {job} is still {record.get('state')} after {timeout} s")
        self.record = record


@dataclass
class Event:
    """One detector event: its run, index, time, scalars and numpy arrays."""

    experiment: str
    run: int
    source: str
    index: int
    time_ns: int
    scalars: Dict[str, Any]
    arrays: Dict[str, Any]


@dataclass
class Batch:
    """The events of one wire message (one stream sequence)."""

    experiment: str
    run: int
    source: str
    subject: str
    stream_sequence: int
    events: List[Event]

    @classmethod
    def _from_native(cls, raw: Dict[str, Any]) -> "Batch":
        events = [
            Event(raw["experiment"], raw["run"], raw["source"], e["index"], e["time_ns"],
                  e["scalars"], e["arrays"])
            for e in raw["events"]
        ]
        return cls(raw["experiment"], raw["run"], raw["source"], raw["subject"],
                   raw["stream_sequence"], events)


Start = Union[str, Dict[str, Any]]


class Client:
    """A connection of one institution.

    ``seed_file`` holds the institution's user nkey seed (``SU...``); omit it
    on a development server without authentication. Under the auth callout
    the inbox prefix is ``_INBOX.<institution>`` (set here) and pulls use the
    grant's ``api_prefix``.

    Raises :class:`FileNotFoundError` for a missing seed file,
    :class:`ValueError` for a file that holds no user seed, and
    :class:`AuthenticationError` when the server refuses the key or, with
    ``check`` (one ``usage`` round trip when a seed is given), when the key
    belongs to another institution.
    """

    def __init__(self, url: str, seed_file: Optional[Union[str, Path]] = None,
                 institution: str = "", *, seed: Optional[str] = None,
                 check: bool = True) -> None:
        if not institution:
            raise ValueError("institution is required (the id of your institution's policy)")
        if seed is None and seed_file is not None:
            path = Path(seed_file)
            try:
                seed = path.read_text().strip()
            except OSError as e:
                raise FileNotFoundError(
                    f"cannot read the seed file {path}: {e.strerror or e}; pass the file "
                    f"holding {institution}'s nkey seed (SU...)") from e
        if seed is not None and not seed.startswith("SU"):
            raise ValueError(
                f"{seed_file or 'seed'} does not hold a user nkey seed (it must start with "
                f"'SU'; `lclstream keygen` writes one)")
        self.institution = institution
        try:
            self._native = NativeClient(url, institution, seed)
        except ConnectionError as e:
            text = str(e).lower()
            if "authorization" in text or "authentication" in text or "auth" in text:
                raise AuthenticationError(
                    f"the server at {url} refused institution {institution!r} with "
                    f"{'seed file ' + str(seed_file) if seed_file else 'this seed'}: check the "
                    f"seed file and the institution id; a revoked or expired key, or an auth "
                    f"callout that did not answer in time, look the same, so try again "
                    f"before changing anything ({e})") from None
            raise
        if seed is not None and check:
            # Behind the auth callout the server knows who the key is; a key
            # of another institution connects but may not speak for this
            # one: its requests go unanswered. One round trip says so now.
            try:
                self.usage()
            except ConnectionError as e:
                raise AuthenticationError(
                    f"connected to {url}, but the gateway does not answer institution "
                    f"{institution!r}: the seed file {seed_file or ''} holds a key of another "
                    f"institution, or the gateway is down ({e})") from None

    def call(self, verb: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """Sends ``body`` to the gateway ``verb``; raises :class:`GatewayError` on refusal."""
        ok, text, reason = self._native.call(verb, json.dumps(body))
        if not ok:
            raise GatewayError(text, reason)
        reply: Dict[str, Any] = json.loads(text)
        return reply

    def request(self, filters: Sequence[str], *, start: Start = "all",
                end: Optional[Dict[str, Any]] = None, label: Optional[str] = None) -> Dict[str, Any]:
        """Asks for a dataset. ``start``: ``"all"``, ``"new"``, ``{"sequence": n}``
        or ``{"time": "2026-03-01T10:00:00Z"}``. The same ``label`` again resumes."""
        body: Dict[str, Any] = {"filters": list(filters), "start": start}
        if end is not None:
            body["end"] = end
        if label is not None:
            body["label"] = label
        return self.call("request", body)

    def list(self) -> Dict[str, Any]:
        """The institution's grants and consumers."""
        return self.call("list", {})

    def usage(self) -> Dict[str, Any]:
        """Usage and remaining quota."""
        return self.call("usage", {})

    def release(self, *, consumer: Optional[str] = None, label: Optional[str] = None) -> Dict[str, Any]:
        """Deletes a consumer by name or label."""
        body = {k: v for k, v in (("consumer", consumer), ("label", label)) if v is not None}
        return self.call("release", body)

    # Publish jobs (docs/jobs.md): the facility streams a run from storage.

    def submit_job(self, instrument: str, experiment: str, run: int, *,
                   run_end: Optional[int] = None, fields: Sequence[str] = (),
                   roi: Optional[Sequence[int]] = None, bin: Optional[int] = None,
                   threshold: Optional[float] = None, dtype: Optional[str] = None,
                   batch_events: Optional[int] = None, batch_bytes: Optional[int] = None,
                   events: Optional[Tuple[int, int]] = None,
                   label: Optional[str] = None) -> Dict[str, Any]:
        """Submits a publish job; returns its view (``record``, ``grant``,
        ``watch``). ``events=(first, last)`` keeps only those events of each
        run; ``roi=(y0, y1, x0, x1)``, ``bin``, ``threshold`` and ``dtype``
        process the arrays at the facility."""
        body: Dict[str, Any] = {"instrument": instrument, "experiment": experiment, "run": run}
        if run_end is not None:
            body["run_end"] = run_end
        if fields:
            body["fields"] = list(fields)
        processing = {k: v for k, v in (("roi", list(roi) if roi is not None else None),
                                        ("bin", bin), ("threshold", threshold),
                                        ("dtype", dtype)) if v is not None}
        if processing:
            body["processing"] = processing
        if batch_events is not None or batch_bytes is not None:
            batch: Dict[str, Any] = {}
            if batch_events is not None:
                batch["max_events"] = batch_events
            if batch_bytes is not None:
                batch["max_bytes"] = batch_bytes
            body["batch"] = batch
        if events is not None:
            body["events"] = {"first": events[0], "last": events[1]}
        if label is not None:
            body["label"] = label
        return self.call("jobs.submit", body)

    def job(self, job: str) -> Dict[str, Any]:
        """One job's view: its ``record`` and, while it has one, its ``grant``."""
        return self.call("jobs.get", {"job": job})

    def jobs(self, state: Optional[str] = None) -> List[Dict[str, Any]]:
        """The institution's job records, optionally only those in ``state``
        (queued, running, done, failed, cancelled)."""
        body = {"state": state} if state is not None else {}
        records: List[Dict[str, Any]] = self.call("jobs.list", body)["jobs"]
        return records

    def cancel_job(self, job: str) -> Dict[str, Any]:
        """Cancels a job and releases its consumer; returns its view."""
        return self.call("jobs.cancel", {"job": job})

    def watch_job(self, job: str, *, timeout: float = 3600.0, poll: float = 2.0,
                  on_update: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
        """Follows the job's status until it is done, failed or cancelled and
        returns that record (``on_update`` sees every record that changed).

        Status is pushed by the gateway and kept only when signed with its
        notices key; the record is also re-read every ``poll`` seconds
        without news, which covers a missed message. Raises
        :class:`JobTimeout` after ``timeout`` seconds."""
        import time

        deadline = time.monotonic() + timeout
        view = self.job(job)
        watch = self._native.watch(json.dumps(view))
        record: Dict[str, Any] = view["record"]
        if on_update is not None:
            on_update(record)
        while record["state"] not in JOB_TERMINAL_STATES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(job, record, timeout)
            pushed = watch.next(max(0.0, min(poll, remaining)))
            latest: Dict[str, Any] = (json.loads(pushed) if pushed is not None
                                      else self.job(job)["record"])
            if latest != record and on_update is not None:
                on_update(latest)
            record = latest
        return record

    def job_stream(self, job: str, **kwargs: Any) -> "Stream":
        """A puller of the job's data (also while it runs)."""
        view = self.job(job)
        if not view.get("grant"):
            raise GatewayError("bad_request", f"job {job} has no consumer any more "
                                              f"(it is {view['record']['state']})")
        return self.stream(view["grant"], **kwargs)

    def stream(self, grant: Dict[str, Any], *, batch_messages: int = 64,
               threads: int = 2) -> "Stream":
        """A puller of ``grant``; several pullers (processes) on the same grant
        share its messages without overlap."""
        return Stream(self._native.puller(json.dumps(grant), batch_messages, threads))


class Stream:
    """Batches of a granted dataset, acknowledged after the caller's step."""

    def __init__(self, native: NativePuller) -> None:
        self._native = native

    def batches(self, *, idle_timeout: float = 5.0, expires: float = 1.0,
                max_batches: Optional[int] = None) -> Generator[Batch, None, None]:
        """Yields batches until none arrives for ``idle_timeout`` seconds, the
        dataset ends or ``max_batches``. Each batch is acknowledged when the
        next is asked for, or at the end; an exception in the caller's step
        hands the unacknowledged batches back."""
        import time

        given = 0
        last = time.monotonic()
        try:
            while max_batches is None or given < max_batches:
                if time.monotonic() - last > idle_timeout or self._native.ended:
                    break
                pulled = self._native.next_batches(int(expires * 1000))
                if pulled:
                    last = time.monotonic()
                for raw in pulled:
                    if max_batches is not None and given >= max_batches:
                        break
                    yield Batch._from_native(raw)
                    given += 1
                    # The caller's step on this batch is done: acknowledge it
                    # alone (the rest of the pull is not stepped over yet).
                    self._native.ack(1)
        finally:
            # Anything pulled but not yet stepped over goes back at once.
            self._native.nak()

    def events(self, **kwargs: Any) -> Iterator[Event]:
        """Yields events, batch by batch (acknowledged per batch)."""
        for batch in self.batches(**kwargs):
            yield from batch.events

    def ack(self) -> int:
        """Acknowledges every batch handed out so far."""
        return self._native.ack()


class StreamDataset:
    """A PyTorch-style ``IterableDataset`` over a labelled dataset.

    **Sharing.** Every rank and DataLoader worker that iterates a dataset of
    the same ``label`` pulls from the same durable consumer, and the server
    hands each message (batch of events) to exactly one puller: N ranks x M
    workers share the dataset with no overlap and no gap, with no
    coordination between them. Each puller sees its share in stream order;
    the shares interleave (no global order across pullers). For a fixed
    order per rank, give each rank its own filters and its own label
    (a consumer per rank).

    **Delivery** is at least once: a batch is acknowledged when its puller
    asks for the next one, so a worker killed mid-step has its batch
    redelivered (after the consumer's ack wait) to whichever puller asks next.

    **Resume.** The position lives on the server (the acknowledged batches).
    :meth:`state_dict` also records how far into its current batch this
    puller got; a dataset loaded from it skips those events if the batch
    comes back to it, so a single puller resumes with no gap and no overlap.
    With several pullers a redelivered batch may go to another one, which
    then yields it whole: at most one batch per worker is seen twice.

    torch is not required; with torch installed, wrap it in
    ``torch.utils.data.IterableDataset`` (see docs/partners.md).
    """

    def __init__(self, url: str, seed_file: Optional[Union[str, Path]], institution: str,
                 filters: Sequence[str], label: str, *, idle_timeout: float = 5.0,
                 batch_messages: int = 8, threads: int = 2,
                 max_events: Optional[int] = None) -> None:
        self.url, self.seed_file, self.institution = url, seed_file, institution
        self.filters, self.label, self.idle_timeout = list(filters), label, idle_timeout
        self.batch_messages, self.threads, self.max_events = batch_messages, threads, max_events
        self._events = 0
        self._current: Optional[Dict[str, int]] = None
        self._skip: Optional[Dict[str, int]] = None

    def __iter__(self) -> Iterator[Event]:
        client = Client(self.url, self.seed_file, self.institution)
        grant = client.request(self.filters, label=self.label)
        stream = client.stream(grant, batch_messages=self.batch_messages, threads=self.threads)
        given = 0
        batches = stream.batches(idle_timeout=self.idle_timeout)
        try:
            for batch in batches:
                skip = 0
                if self._skip and self._skip["stream_sequence"] == batch.stream_sequence:
                    # A batch this puller had started before the state was
                    # taken: its first events were already yielded.
                    skip = self._skip["yielded"]
                    self._skip = None
                for k, event in enumerate(batch.events):
                    if k < skip:
                        continue
                    self._current = {"stream_sequence": batch.stream_sequence, "yielded": k + 1}
                    self._events += 1
                    given += 1
                    yield event
                    if self.max_events is not None and given >= self.max_events:
                        return
        finally:
            batches.close()

    def state_dict(self) -> Dict[str, Any]:
        """What :meth:`load_state_dict` needs to resume: the label and
        filters (the server holds the acknowledged position), the number of
        events yielded, and how far into its current batch this puller got."""
        return {"label": self.label, "filters": list(self.filters), "events": self._events,
                "current": dict(self._current) if self._current else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Resumes from :meth:`state_dict` (call before iterating)."""
        self.label = state["label"]
        self.filters = list(state["filters"])
        self._events = int(state.get("events", 0))
        current = state.get("current")
        self._skip = dict(current) if current else None
        self._current = dict(current) if current else None


def decode(headers: Dict[str, str], payload: bytes) -> Batch:
    """Decodes one whole wire message (docs/wire-format.md) held elsewhere,
    e.g. fetched with another NATS client, with the Rust decoder."""
    return Batch._from_native(_native_decode(headers, payload))
