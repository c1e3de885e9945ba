//! Facility roles, as written in `policies/roles.toml`: the agents that
//! publish event data and the operators that run the broker.

use serde::{Deserialize, Serialize};

use super::model::InstitutionKey;

/// The contents of `roles.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesFile {
    /// Facility agents (`[[agent]]` tables).
    #[serde(default)]
    pub agent: Vec<AgentRole>,
    /// Operators (`[[operator]]` tables).
    #[serde(default)]
    pub operator: Vec<OperatorRole>,
}

/// A facility agent: publishes events of some instruments into their streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRole {
    /// Identifier (`[a-z0-9-]`, at most 32 characters), unique among all
    /// institutions and roles, e.g. `mfx-daq`.
    pub id: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// Instruments whose subjects (`lcls.<instrument>.>`) the agent may publish on.
    pub instruments: Vec<String>,
    /// Public nkeys the agent may connect with.
    #[serde(default)]
    pub keys: Vec<InstitutionKey>,
}

/// An operator: full access to the facility account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorRole {
    /// Identifier (`[a-z0-9-]`, at most 32 characters), unique among all
    /// institutions and roles.
    pub id: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// Public nkeys the operator may connect with.
    #[serde(default)]
    pub keys: Vec<InstitutionKey>,
}
