//! The lclstream gateway: who may read what, and how much.
//!
//! - [`policy`]: per-institution policy files (keys, grants, quotas).

pub mod policy;
