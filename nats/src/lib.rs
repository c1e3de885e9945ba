//! How lclstream speaks NATS.
//!
//! - [`wire`]: the v1 wire format of an event batch (MessagePack, LZ4, optional
//!   byte shuffle, headers, chunking of oversized events).
//! - [`subjects`]: the subject scheme and stream naming.
//! - [`streams`]: default JetStream stream and consumer settings.
//! - [`synthetic`]: detector-like synthetic frames for demos and benchmarks.
//! - [`protocol`]: data requests and publish jobs between partners, the
//!   gateway and facility workers (JSON messages, names, job streams).
//! - [`server`]: rendering nats-server configuration and launching real
//!   nats-server processes for development, demos and tests.
//! - [`server_urls`]: comma-separated server URL lists, as every connection reads them.
//! - [`topology`]: globally distributed deployments as data (edge leaf nodes,
//!   facility and partner clusters, stream placement): render, run, status.

pub mod connection_events;
pub mod metrics_http;
pub mod protocol;
pub mod server;
pub mod server_urls;
pub mod streams;
pub mod subjects;
pub mod synthetic;
pub mod topology;
pub mod wire;
