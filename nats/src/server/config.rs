//! Rendering nats-server configuration files.
//!
//! One [`ServerConfig`] describes one server: ports, JetStream, limits and
//! optional blocks (accounts, authorization, cluster, leaf nodes, gateways)
//! given as already-rendered text, so that later layers (gateway auth
//! callout, topologies) compose them without this module knowing them.

use std::fmt::Write as _;
use std::path::PathBuf;

/// JetStream settings of one server.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Storage directory.
    pub store_dir: PathBuf,
    /// JetStream domain (for leaf nodes that keep their own JetStream).
    pub domain: Option<String>,
    /// Largest memory storage in bytes.
    pub max_memory: u64,
    /// Largest file storage in bytes.
    pub max_file: u64,
    /// How often stored messages are fsynced (`jetstream { sync_interval }`):
    /// `Some("always")` fsyncs every write before it is acknowledged, so an
    /// acknowledged message survives a power cut of this server; `None` keeps
    /// the server's default (every 2 minutes), where an acknowledged message
    /// is durable only through its replicas.
    pub sync_interval: Option<String>,
}

/// Configuration of one nats-server process.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Server name (unique within a cluster).
    pub name: String,
    /// Listen address; always loopback in development and tests.
    pub host: String,
    /// Client port.
    pub port: u16,
    /// HTTP monitoring port.
    pub monitor_port: u16,
    /// JetStream, if enabled.
    pub jetstream: Option<JetStreamConfig>,
    /// Largest message payload (bytes).
    pub max_payload: usize,
    /// Largest buffered bytes per client connection; must be at least `max_payload`.
    pub max_pending: usize,
    /// Extra top-level blocks, already rendered (accounts, authorization, cluster...).
    pub blocks: Vec<String>,
}

impl ServerConfig {
    /// A loopback server with JetStream stored in `store_dir`, on the given ports.
    pub fn loopback(name: &str, port: u16, monitor_port: u16, store_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            name: name.to_string(),
            host: "127.0.0.1".to_string(),
            port,
            monitor_port,
            jetstream: Some(JetStreamConfig {
                store_dir,
                domain: None,
                max_memory: 256 * 1024 * 1024,
                max_file: 16 * 1024 * 1024 * 1024,
                sync_interval: None,
            }),
            max_payload: 8 * 1024 * 1024,
            max_pending: 64 * 1024 * 1024,
            blocks: Vec::new(),
        }
    }

    /// Renders the configuration file text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "server_name: {}", quote(&self.name));
        let _ = writeln!(out, "host: {}", quote(&self.host));
        let _ = writeln!(out, "port: {}", self.port);
        let _ = writeln!(
            out,
            "http: {}",
            quote(&format!("{}:{}", self.host, self.monitor_port))
        );
        let _ = writeln!(out, "max_payload: {}", self.max_payload);
        let _ = writeln!(out, "max_pending: {}", self.max_pending);
        if let Some(js) = &self.jetstream {
            let _ = writeln!(out, "jetstream {{");
            let _ = writeln!(
                out,
                "  store_dir: {}",
                quote(&js.store_dir.display().to_string())
            );
            let _ = writeln!(out, "  max_memory_store: {}", js.max_memory);
            let _ = writeln!(out, "  max_file_store: {}", js.max_file);
            if let Some(domain) = &js.domain {
                let _ = writeln!(out, "  domain: {}", quote(domain));
            }
            if let Some(interval) = &js.sync_interval {
                let _ = writeln!(out, "  sync_interval: {}", quote(interval));
            }
            let _ = writeln!(out, "}}");
        }
        for block in &self.blocks {
            out.push_str(block);
            if !block.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }
}

/// Quotes a string for the nats-server configuration language.
pub fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_ports_jetstream_and_blocks() {
        let mut config = ServerConfig::loopback("n1", 4222, 8222, "/tmp/js".into());
        config.blocks.push("cluster { name: c1 }".into());
        let text = config.render();
        assert!(text.contains("port: 4222\n"));
        assert!(text.contains("http: \"127.0.0.1:8222\""));
        assert!(text.contains("store_dir: \"/tmp/js\""));
        assert!(text.ends_with("cluster { name: c1 }\n"));
    }
}
