//! The lclstream facility agent.
//!
//! Reads detector events from HDF5 files (one file, a glob, or a watched
//! directory), from LCLS-II xtc2 runs through psana, or from a synthetic detector, processes them, batches them,
//! encodes them with the wire format, appends them to a write-ahead
//! [`spool`] and publishes them into JetStream with pipelined acks.
//!
//! ```text
//! reader thread ──events──▶ batcher thread ──encode, append──────▶ spool
//!                                                                      │
//!                       publisher task ◀──read in seq order────────────┘
//!                       (pipelined publishes, acks advance the spool head)
//! ```
//!
//! Use [`Agent::new`] and [`Agent::run`] in-process, or `lclstream agent --config`.
//! [`worker`] runs publish jobs (runs streamed from storage on request).

pub mod agent;
pub mod batcher;
pub mod config;
pub mod hdf5_source;
pub mod metrics;
pub mod process;
pub mod psana_source;
pub mod publisher;
pub mod resume;
pub mod sample;
pub mod source;
pub mod spool;
pub mod worker;

use std::path::PathBuf;

pub use agent::{Agent, RunReport};
pub use config::AgentConfig;

/// Everything that stops the agent or a file.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid.
    #[error("configuration {}: {message}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// An HDF5 file cannot be read as configured.
    #[error("HDF5 file {}: {message}", path.display())]
    Hdf5 {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the dataset.
        message: String,
    },
    /// The spool cannot be read or written.
    #[error("spool {}: {message}", path.display())]
    Spool {
        /// The spool file or directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A source failed.
    #[error("source {source_name}: {message}")]
    Source {
        /// The source name.
        source_name: String,
        /// What failed.
        message: String,
    },
    /// Talking to NATS failed in a way retrying cannot fix.
    #[error("NATS: {0}")]
    Nats(String),
    /// Any other I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}
