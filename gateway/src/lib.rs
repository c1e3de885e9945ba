//! The lclstream gateway: who may read what, and how much.
//!
//! - [`policy`]: per-institution policy files (keys, grants, quotas).
//! - [`naming`]: consumer slot names, inbox prefixes and request subjects
//!   shared by the request service and the auth callout.
//! - [`service`]: the data-request NATS service and the byte meter.
//! - [`quota`]: request and byte counters over injectable time windows.
//! - [`audit`]: the JSON-lines audit log of every decision.
//! - [`auth`]: the nats-server auth callout (who may connect, with which permissions).
//! - [`keys`]: nkey files (institution, agent, operator and gateway keys).
//! - [`jobs`]: publish jobs (runs streamed from facility storage on request).
//! - [`shared_state`]: quota counters, locks and meter leadership shared
//!   by several gateways through JetStream key-value buckets.
//! - [`gateway`]: configuration and the runner that starts everything.

pub mod audit;
pub mod auth;
pub mod deploy;
pub mod gateway;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub use lclstream_nats::protocol::naming;
pub mod policy;
pub mod quota;
pub mod service;
pub mod shared_state;
