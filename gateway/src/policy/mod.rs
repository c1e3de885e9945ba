//! Institution policies: one TOML file per institution in `policies/`, plus
//! `policies/roles.toml` for facility agents and operators.
//!
//! - `model`: the institution file format ([`InstitutionPolicy`]).
//! - [`roles`]: the roles file format.
//! - [`set`]: loading and validating a directory into a [`PolicySet`].
//! - [`store`]: the live, reloading [`PolicyStore`].

mod model;
pub mod roles;
pub mod set;
pub mod store;

pub use model::{Grant, InstitutionKey, InstitutionPolicy, PullQuota, Quotas};
pub use roles::{AgentRole, OperatorRole, RolesFile};
pub use set::{
    check_user_public_key, instrument_of_stream, Access, Diagnostic, Identity, PolicyError,
    PolicySet, Principal, PrincipalKind, Severity, WithdrawnKey, ROLES_FILE,
};
pub use store::{PolicyChange, PolicyStore, WatcherHandle};
