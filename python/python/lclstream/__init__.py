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
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from ._native import NativeClient, NativePuller

__all__ = ["Client", "GatewayError", "Stream", "Batch", "Event", "StreamDataset"]


class GatewayError(Exception):
    """The gateway refused a request; ``code`` is its machine-readable reason
    (``no_grant``, ``quota_requests``, ``quota_consumers``, ``quota_bytes``,
    ``bad_request``, ``unknown_institution``, ``internal``)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


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
    """

    def __init__(self, url: str, seed_file: Optional[Union[str, Path]] = None,
                 institution: str = "", *, seed: Optional[str] = None) -> None:
        if not institution:
            raise ValueError("institution is required (the id of your institution's policy)")
        if seed is None and seed_file is not None:
            seed = Path(seed_file).read_text().strip()
        self.institution = institution
        self._native = NativeClient(url, institution, seed)

    def call(self, verb: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """Sends ``body`` to the gateway ``verb``; raises :class:`GatewayError` on refusal."""
        ok, text, reason = self._native.call(verb, json.dumps(body))
        if not ok:
            raise GatewayError(text, reason)
        return json.loads(text)

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
                max_batches: Optional[int] = None) -> Iterator[Batch]:
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
                    self._native.ack()
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

    Every rank and DataLoader worker pulls from the same durable consumer
    (the label's), so the messages are shared without overlap and without
    gap; the order across workers is the stream order interleaved by pull.
    The position lives on the server (acknowledged batches), so
    ``state_dict()`` only records the label and grant: loading it and
    iterating again resumes after the last acknowledged batch. torch is not
    required; subclass or wrap it in ``torch.utils.data.IterableDataset``.
    """

    def __init__(self, url: str, seed_file: Optional[Union[str, Path]], institution: str,
                 filters: Sequence[str], label: str, *, idle_timeout: float = 5.0) -> None:
        self.url, self.seed_file, self.institution = url, seed_file, institution
        self.filters, self.label, self.idle_timeout = list(filters), label, idle_timeout

    def __iter__(self) -> Iterator[Event]:
        client = Client(self.url, self.seed_file, self.institution)
        grant = client.request(self.filters, label=self.label)
        yield from client.stream(grant).events(idle_timeout=self.idle_timeout)

    def state_dict(self) -> Dict[str, Any]:
        return {"label": self.label, "filters": self.filters}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.label = state["label"]
        self.filters = list(state["filters"])
