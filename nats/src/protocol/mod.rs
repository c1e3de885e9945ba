//! The request protocols spoken between partners, the gateway and facility
//! workers: names (subjects, consumer slots, inboxes), the JSON messages of
//! data requests and publish jobs, and the JetStream resources jobs use.
//!
//! They live here, not in the gateway, because three parties speak them: the
//! gateway answers, partners ask (`lclstream-partner`) and agents run jobs
//! (`lclstream-agent`'s worker). Specifications: `docs/gateway-protocol.md`
//! and `docs/jobs.md`.

pub mod job_stores;
pub mod jobs;
pub mod naming;
pub mod requests;
pub mod signing;
