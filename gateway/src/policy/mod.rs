//! Institution policies: one TOML file per institution in `policies/`.

mod model;

pub use model::{Grant, InstitutionKey, InstitutionPolicy, PullQuota, Quotas};
