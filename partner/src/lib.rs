//! The partner side of lclstream: ask the gateway for a dataset, pull it with
//! the durable consumer the gateway created, reassemble and decode batches,
//! hand events to a sink, and acknowledge only after the sink has them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lclstream_partner::PartnerError> {
//! use lclstream_partner::{DatasetRequest, PartnerClient, PartnerConfig, PullOptions, CallbackSink};
//! let client = PartnerClient::connect(&PartnerConfig {
//!     url: "nats://gateway.example:4222".into(),
//!     institution: "ucsd".into(),
//!     seed: Some(std::fs::read_to_string("ucsd.nk").unwrap().trim().into()),
//! })
//! .await?;
//! let grant = client
//!     .request_dataset(&DatasetRequest {
//!         filters: vec!["lcls.mfx.mfxp1234.>".into()],
//!         start: Default::default(),
//!         end: None,
//!         label: Some("run-42".into()), // asking again with this label resumes
//!     })
//!     .await?;
//! let mut sink = CallbackSink::new(|batch, event| {
//!     println!("{} run {} event {}", batch.source, batch.run, event.index);
//!     Ok(())
//! });
//! let summary = client.pull(&grant, &PullOptions::default(), &mut sink).await?;
//! println!("{} events", summary.events);
//! # Ok(()) }
//! ```
//!
//! Delivery is at least once; a sink that remembers what it wrote (the JSON
//! lines and HDF5 writers here read their own output on start) makes the
//! result exactly once across crashes and restarts.

mod client;
pub mod hdf5_sink;
pub mod jsonl;
mod pull;
mod sink;

pub use client::{
    verify_from_gateway, JobStatus, Notices, PartnerClient, PartnerConfig, PartnerError,
};
pub use lclstream_nats::protocol::requests::{
    DatasetGrant, DatasetList, DatasetRequest, End, ErrorBody, ErrorCode, Notice, ReleaseReply,
    ReleaseRequest, Start, UsageReply,
};
pub use pull::{default_decode_threads, PullOptions, PullSummary, StopReason};
pub use sink::{BatchInfo, CallbackSink, EventKey, EventSink};
