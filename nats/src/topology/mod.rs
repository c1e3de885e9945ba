//! Globally distributed deployments as data.
//!
//! A topology file describes the sites of a deployment:
//! - facility **edge** leaf nodes, each one server with its own JetStream
//!   domain, where the agent publishes; they keep accepting data while the
//!   WAN link to the facility is down;
//! - the **facility** cluster (usually 3 servers), hub of the leaf nodes;
//! - **partner** clusters, joined with the facility cluster into one
//!   supercluster by NATS gateways, holding mirrors near partner consumers;
//! - per instrument, which copy of the stream lives where: an edge stream
//!   (subjects `lcls.<instrument>.>`), a facility stream sourcing every edge
//!   across domains (`$JS.<domain>.API`), and partner mirrors of the facility
//!   stream placed in each partner cluster.
//!
//! Modules: [`spec`] (file format and validation), [`plan`] (servers and
//! ports), [`render`] (nats-server configurations), [`run`] (local processes
//! on loopback), [`streams`] (creating the stream copies), [`status`]
//! (health from the monitoring endpoints).
//!
//! Extension points for authentication (the gateway's auth callout):
//! [`AuthSpec`] blocks (global or per site), `include` files,
//! [`Topology::add_blocks`] from code, leaf node account and credentials,
//! and [`RunningTopology::set_connect`] for how clients connect.

pub mod plan;
pub mod render;
pub mod run;
pub mod spec;
pub mod status;
pub mod streams;

use std::path::{Path, PathBuf};

pub use plan::{Plan, PlannedServer, PortMode, Ports};
pub use run::RunningTopology;
pub use spec::{AuthSpec, Limits, Role, ServerSpec, SiteSpec, StreamSpec, TlsSpec, Topology};
pub use status::{ServerStatus, StreamStatus, TopologyStatus};
pub use streams::{edge_stream_name, facility_stream_name, partner_stream_name};

use crate::server::ServerError;

/// Errors loading, rendering, running or inspecting a topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The topology file is malformed or inconsistent.
    #[error("{file}: {message}")]
    Invalid {
        /// The file (or a label for text).
        file: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// Ports or addresses cannot be resolved.
    #[error("topology plan: {0}")]
    Plan(String),
    /// Reading or writing a file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Starting or talking to a server.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A JetStream or connection error while creating streams or waiting.
    #[error("{0}")]
    Nats(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A name that is not part of the topology.
    #[error("unknown {kind} {name:?}")]
    Unknown {
        /// Site, server or stream.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
}

impl Topology {
    /// Resolves servers and ports; see [`PortMode`].
    pub fn plan(&self, mode: PortMode) -> Result<Plan, TopologyError> {
        Plan::new(self, mode)
    }

    /// Writes every nats-server configuration into `dir` (ports from the file,
    /// or the standard ports when every server has its own host), plus
    /// `topology.resolved.toml`. Returns the configuration files written.
    pub fn render(&self, dir: &Path) -> Result<Vec<PathBuf>, TopologyError> {
        self.plan(PortMode::FromFile)?.render_into(dir)
    }
}
