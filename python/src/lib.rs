//! Python bindings of the lclstream partner client: gateway requests through
//! `lclstream-partner`, and a puller that reassembles and decodes with the
//! Rust wire decoder (`lclstream-nats::wire`) on several threads, outside the
//! GIL, handing each array to numpy without a copy.
//!
//! The Python package (`python/lclstream`) wraps this module; nothing here is
//! meant to be used directly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use lclstream_nats::protocol::jobs::JobView;
use lclstream_nats::wire::{self, headers as h, Batch, DecodeLimits, Reassembler, Scalar};
use lclstream_partner::{DatasetGrant, End, JobStatus, PartnerClient, PartnerConfig, PartnerError};
use numpy::PyArray1;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

fn runtime_error(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// A connection of one institution to the gateway.
#[pyclass(module = "lclstream._native")]
struct NativeClient {
    runtime: Arc<tokio::runtime::Runtime>,
    client: PartnerClient,
}

/// A gateway reply: `(True, reply_json)` or `(False, (code, message))`.
type CallOutcome = (bool, String, String);

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (url, institution, seed=None))]
    fn new(
        py: Python<'_>,
        url: String,
        institution: String,
        seed: Option<String>,
    ) -> PyResult<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(runtime_error)?;
        let config = PartnerConfig {
            url,
            institution,
            seed,
        };
        let client = py
            .detach(|| runtime.block_on(PartnerClient::connect(&config)))
            .map_err(|e| PyConnectionError::new_err(e.to_string()))?;
        Ok(NativeClient {
            runtime: Arc::new(runtime),
            client,
        })
    }

    /// Sends a JSON body to the gateway verb; refusals come back as
    /// `(False, code, message)` so that Python raises its own exception class.
    fn call(&self, py: Python<'_>, verb: String, body: String) -> PyResult<CallOutcome> {
        let outcome = py.detach(|| {
            self.runtime.block_on(
                self.client
                    .call_raw::<serde_json::Value>(&verb, body.into_bytes()),
            )
        });
        match outcome {
            Ok(value) => Ok((true, value.to_string(), String::new())),
            Err(PartnerError::Refused(body)) => {
                Ok((false, body.code.as_str().to_string(), body.reason.clone()))
            }
            Err(PartnerError::Nats(e)) => Err(PyConnectionError::new_err(e)),
            Err(e) => Err(runtime_error(e)),
        }
    }

    /// Follows the status of a publish job (`view_json`: the gateway's job
    /// view), keeping only records about it signed by the gateway.
    fn watch(&self, py: Python<'_>, view_json: &str) -> PyResult<NativeStatusWatch> {
        let view: JobView = serde_json::from_str(view_json)
            .map_err(|e| PyValueError::new_err(format!("not a job view: {e}")))?;
        let status = py
            .detach(|| self.runtime.block_on(self.client.job_status(&view)))
            .map_err(|e| {
                PyConnectionError::new_err(format!("subscribing to {}: {e}", view.watch))
            })?;
        Ok(NativeStatusWatch {
            runtime: self.runtime.clone(),
            status: std::sync::Mutex::new(status),
        })
    }

    /// A puller of a granted dataset (the grant as the gateway's JSON reply).
    #[pyo3(signature = (grant_json, batch_messages=64, threads=2))]
    fn puller(
        &self,
        py: Python<'_>,
        grant_json: &str,
        batch_messages: usize,
        threads: usize,
    ) -> PyResult<NativePuller> {
        let grant: DatasetGrant = serde_json::from_str(grant_json)
            .map_err(|e| PyValueError::new_err(format!("not a dataset grant: {e}")))?;
        // The JetStream context spawns a task: it must be made inside the runtime.
        let js = {
            let _inside = self.runtime.enter();
            self.client.jetstream(&grant.api_prefix)
        };
        let consumer: PullConsumer = py
            .detach(|| {
                self.runtime
                    .block_on(js.get_consumer_from_stream(&grant.consumer, &grant.stream))
            })
            .map_err(|e| {
                PyConnectionError::new_err(format!(
                    "looking up consumer {} on {}: {e}",
                    grant.consumer, grant.stream
                ))
            })?;
        let granted = |g: i64, cap: usize| if g > 0 { (g as usize).min(cap) } else { cap };
        let limits = DecodeLimits::default();
        Ok(NativePuller {
            runtime: self.runtime.clone(),
            client: self.client.client().clone(),
            consumer,
            end: grant.end.clone(),
            batch_messages: batch_messages
                .max(1)
                .min(granted(grant.pull.max_batch, 4096)),
            batch_bytes: granted(grant.pull.max_bytes, 1 << 30),
            threads: threads.max(1),
            limits,
            reassembler: Reassembler::new(limits),
            held: HashMap::new(),
            unacked: std::collections::VecDeque::new(),
            ended: false,
        })
    }
}

/// Status records of one job, as they are pushed.
#[pyclass(module = "lclstream._native")]
struct NativeStatusWatch {
    runtime: Arc<tokio::runtime::Runtime>,
    status: std::sync::Mutex<JobStatus>,
}

#[pymethods]
impl NativeStatusWatch {
    /// The next status record (JSON text) the gateway signed, waiting at
    /// most `timeout` seconds; `None` when none came. Anything else on the
    /// subject is skipped: anyone allowed to publish there could send it.
    fn next(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<String>> {
        if !timeout.is_finite() || timeout < 0.0 {
            return Err(PyValueError::new_err(
                "timeout must be a finite number of seconds >= 0",
            ));
        }
        let wait = Duration::from_secs_f64(timeout.min(86_400.0));
        py.detach(|| {
            let mut status = self
                .status
                .lock()
                .map_err(|_| runtime_error("the status subscription was poisoned"))?;
            // The timer is made inside the runtime (block_on's future), where it must be.
            match self
                .runtime
                .block_on(async { tokio::time::timeout(wait, status.next()).await })
            {
                Err(_) => Ok(None),
                Ok(None) => Err(PyConnectionError::new_err(
                    "the status subscription ended (connection closed)",
                )),
                Ok(Some(record)) => {
                    Ok(Some(serde_json::to_string(&record).map_err(runtime_error)?))
                }
            }
        })
    }
}

/// Pulls, reassembles and decodes; acknowledges only when told to.
#[pyclass(module = "lclstream._native")]
struct NativePuller {
    runtime: Arc<tokio::runtime::Runtime>,
    client: async_nats::Client,
    consumer: PullConsumer,
    end: Option<End>,
    batch_messages: usize,
    batch_bytes: usize,
    threads: usize,
    limits: DecodeLimits,
    reassembler: Reassembler,
    held: HashMap<String, Vec<jetstream::Message>>,
    /// Messages of each batch handed to Python and not yet acknowledged,
    /// in the order handed out (a batch may span several messages).
    unacked: std::collections::VecDeque<Vec<jetstream::Message>>,
    ended: bool,
}

struct Whole {
    subject: String,
    sequence: u64,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
}

fn beyond_end(end: &Option<End>, info: &jetstream::message::Info<'_>) -> bool {
    match end {
        Some(End::Sequence(last)) => info.stream_sequence > *last,
        Some(End::Time(t)) => info.published > *t,
        None => false,
    }
}

/// Decodes batches on up to `threads` threads, keeping their order.
fn decode_all(
    wholes: &[Whole],
    threads: usize,
    limits: &DecodeLimits,
) -> Vec<Result<Batch, wire::WireError>> {
    if wholes.len() <= 1 || threads <= 1 {
        return wholes
            .iter()
            .map(|w| wire::decode(Some(&w.headers), &w.payload, limits))
            .collect();
    }
    let per = wholes.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = wholes
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|w| wire::decode(Some(&w.headers), &w.payload, limits))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("decoder thread"))
            .collect()
    })
}

impl NativePuller {
    /// One pull request: returns decoded batches with their messages.
    fn pull_once(
        &mut self,
        expires: Duration,
    ) -> Result<Vec<(Whole, Batch, Vec<jetstream::Message>)>, String> {
        let runtime = self.runtime.clone();
        let messages: Vec<jetstream::Message> = runtime.block_on(async {
            let mut batch = self
                .consumer
                .fetch()
                .max_messages(self.batch_messages)
                .max_bytes(self.batch_bytes)
                .expires(expires)
                .messages()
                .await
                .map_err(|e| format!("pull request: {e}"))?;
            let mut out = Vec::new();
            let guard = expires + Duration::from_secs(10);
            while let Ok(Some(next)) = tokio::time::timeout(guard, batch.next()).await {
                match next {
                    Ok(m) => out.push(m),
                    Err(e) => {
                        let text = e.to_string();
                        if text.contains("Consumer Deleted") || text.contains("Exceeds MaxBytes") {
                            return Err(format!("pull: {text}"));
                        }
                        break;
                    }
                }
            }
            Ok::<_, String>(out)
        })?;
        let mut wholes = Vec::new();
        let mut groups = Vec::new();
        for message in messages {
            if self.ended {
                let _ = runtime.block_on(message.ack_with(AckKind::Nak(None)));
                continue;
            }
            let info = message
                .info()
                .map_err(|e| format!("message metadata: {e}"))?;
            let sequence = info.stream_sequence;
            if beyond_end(&self.end, &info) {
                self.ended = true;
                let _ = runtime.block_on(message.ack_with(AckKind::Nak(None)));
                continue;
            }
            let headers = message.headers.clone().unwrap_or_default();
            let id = h::get(&headers, h::BATCH_ID)
                .unwrap_or_default()
                .to_string();
            match self.reassembler.push(&headers, message.payload.clone()) {
                Ok(Some(whole)) => {
                    let mut group = self.held.remove(&id).unwrap_or_default();
                    let subject = message.subject.to_string();
                    group.push(message);
                    wholes.push(Whole {
                        subject,
                        sequence,
                        headers: whole.headers,
                        payload: whole.payload,
                    });
                    groups.push(group);
                }
                Ok(None) => self.held.entry(id).or_default().push(message),
                Err(_) => {
                    let _ = runtime.block_on(message.ack_with(AckKind::Term));
                }
            }
        }
        let decoded = decode_all(&wholes, self.threads, &self.limits);
        let mut out = Vec::new();
        for ((whole, result), group) in wholes.into_iter().zip(decoded).zip(groups) {
            match result {
                Ok(batch) => out.push((whole, batch, group)),
                Err(_) => {
                    // Undecodable: never deliverable, so terminated rather than redelivered.
                    for m in group {
                        let _ = runtime.block_on(m.ack_with(AckKind::Term));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn scalar_to_py<'py>(py: Python<'py>, value: &Scalar) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Scalar::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Scalar::Int(i) => i.into_pyobject(py)?.into_any(),
        Scalar::UInt(u) => u.into_pyobject(py)?.into_any(),
        Scalar::Float(f) => f.into_pyobject(py)?.into_any(),
        Scalar::Float32(f) => (*f as f64).into_pyobject(py)?.into_any(),
        Scalar::Text(s) => s.into_pyobject(py)?.into_any(),
    })
}

fn batch_to_py<'py>(py: Python<'py>, whole: &Whole, batch: Batch) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("experiment", &batch.experiment)?;
    out.set_item("run", batch.run)?;
    out.set_item("source", &batch.source)?;
    out.set_item("first", batch.first)?;
    out.set_item("last", batch.last)?;
    out.set_item("subject", &whole.subject)?;
    out.set_item("stream_sequence", whole.sequence)?;
    let events = PyList::empty(py);
    for event in batch.events {
        let e = PyDict::new(py);
        e.set_item("index", event.index)?;
        e.set_item("time_ns", event.time_ns)?;
        let scalars = PyDict::new(py);
        for (name, value) in &event.scalars {
            scalars.set_item(name, scalar_to_py(py, value)?)?;
        }
        e.set_item("scalars", scalars)?;
        let arrays = PyDict::new(py);
        for (name, array) in event.arrays {
            let shape: Vec<usize> = array.shape.iter().map(|&d| d as usize).collect();
            // The decoded bytes become the numpy buffer: no copy.
            let bytes = PyArray1::from_vec(py, array.data);
            let typed = bytes
                .call_method1("view", (array.dtype.numpy_name(),))?
                .call_method1("reshape", (PyTuple::new(py, shape)?,))?;
            arrays.set_item(name, typed)?;
        }
        e.set_item("arrays", arrays)?;
        events.append(e)?;
    }
    out.set_item("events", events)?;
    Ok(out)
}

#[pymethods]
impl NativePuller {
    /// Decoded batches of one pull request (empty when none arrived within
    /// `expires_ms`); their messages stay unacknowledged until `ack()`.
    fn next_batches<'py>(
        &mut self,
        py: Python<'py>,
        expires_ms: u64,
    ) -> PyResult<Bound<'py, PyList>> {
        if self.ended {
            return Ok(PyList::empty(py));
        }
        let expires = Duration::from_millis(expires_ms.max(100));
        let pulled = py
            .detach(|| self.pull_once(expires))
            .map_err(PyConnectionError::new_err)?;
        let out = PyList::empty(py);
        for (whole, batch, group) in pulled {
            out.append(batch_to_py(py, &whole, batch)?)?;
            self.unacked.push_back(group);
        }
        Ok(out)
    }

    /// True once a message beyond the dataset's end arrived.
    #[getter]
    fn ended(&self) -> bool {
        self.ended
    }

    /// Acknowledges (confirmed) the oldest `batches` batches handed out and
    /// not yet acknowledged, or all of them; returns the messages acknowledged.
    /// Acknowledging only the batches whose step finished keeps the others
    /// of the same pull deliverable again if the process dies.
    #[pyo3(signature = (batches=None))]
    fn ack(&mut self, py: Python<'_>, batches: Option<usize>) -> PyResult<usize> {
        let count = batches
            .unwrap_or(self.unacked.len())
            .min(self.unacked.len());
        let messages: Vec<jetstream::Message> = self.unacked.drain(..count).flatten().collect();
        let n = messages.len();
        let runtime = self.runtime.clone();
        py.detach(|| {
            runtime.block_on(async {
                for m in &messages {
                    m.double_ack().await.map_err(|e| format!("ack: {e}"))?;
                }
                Ok::<_, String>(())
            })
        })
        .map_err(PyConnectionError::new_err)?;
        Ok(n)
    }

    /// Hands back every batch handed out and not acknowledged, and the chunks
    /// of incomplete batches, for redelivery now.
    fn nak(&mut self, py: Python<'_>) -> PyResult<usize> {
        let mut messages: Vec<jetstream::Message> = self.unacked.drain(..).flatten().collect();
        messages.extend(self.held.drain().flat_map(|(_, v)| v));
        let n = messages.len();
        let runtime = self.runtime.clone();
        let client = self.client.clone();
        py.detach(|| {
            runtime.block_on(async {
                for m in &messages {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
            })
        });
        Ok(n)
    }
}

/// Decodes one whole wire message (headers as a dict of strings, payload
/// as bytes) with the Rust decoder, outside the GIL; the result has the
/// shape of a pulled batch (subject empty, stream sequence 0). Used by the
/// decode benchmark and by callers holding messages from elsewhere.
#[pyfunction]
fn decode<'py>(
    py: Python<'py>,
    headers: HashMap<String, String>,
    payload: &[u8],
) -> PyResult<Bound<'py, PyDict>> {
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in &headers {
        map.insert(name.as_str(), value.as_str());
    }
    let payload = bytes::Bytes::copy_from_slice(payload);
    let whole = Whole {
        subject: String::new(),
        sequence: 0,
        headers: map,
        payload,
    };
    let limits = DecodeLimits::default();
    let batch = py
        .detach(|| wire::decode(Some(&whole.headers), &whole.payload, &limits))
        .map_err(|e| PyValueError::new_err(format!("not a wire v1 message: {e}")))?;
    batch_to_py(py, &whole, batch)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_class::<NativeClient>()?;
    m.add_class::<NativePuller>()?;
    m.add_class::<NativeStatusWatch>()?;
    Ok(())
}
