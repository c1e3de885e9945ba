//! nats-server configuration and processes.

pub mod config;
pub mod process;

pub use config::{quote, JetStreamConfig, ServerConfig};
pub use process::{
    bind_free_port, find_nats_server, free_port, http_get, NatsServer, ServerError, INSTALL_HINT,
};
