//! Health of a deployment from the servers' monitoring endpoints.
//!
//! Per server: `/healthz` (up and healthy), `/varz` (memory, connections,
//! cluster), `/leafz` (leaf node links), `/gatewayz` (links between
//! clusters), `/routez` (cluster routes) and `/jsz?streams=true&consumers=true`
//! (stream state, mirror and source lag, consumer lag). Streams are reported
//! by the server that leads them, so each replicated stream appears once.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

use super::plan::PlannedServer;
use crate::server::http_get;

/// Lag of a mirror or source: how many messages the copy is behind its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginLag {
    /// Origin stream name (with its API prefix for another domain).
    pub name: String,
    /// Messages behind.
    pub lag: u64,
    /// Milliseconds since the origin was last heard from, if ever.
    pub active_ms: Option<u64>,
}

/// Lag of one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStatus {
    /// Consumer name.
    pub name: String,
    /// Messages in the stream not yet delivered to it.
    pub num_pending: u64,
    /// Delivered but not yet acknowledged.
    pub num_ack_pending: u64,
    /// Delivered more than once.
    pub num_redelivered: u64,
    /// Pull requests waiting.
    pub num_waiting: u64,
}

/// One stream as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStatus {
    /// Stream name.
    pub name: String,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// First sequence still stored.
    pub first_seq: u64,
    /// Last sequence stored.
    pub last_seq: u64,
    /// Replicas (1 when not clustered).
    pub replicas: u64,
    /// The origin it mirrors, with lag.
    pub mirror: Option<OriginLag>,
    /// The origins it sources, with lag.
    pub sources: Vec<OriginLag>,
    /// Its consumers.
    pub consumers: Vec<ConsumerStatus>,
}

/// One server's view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStatus {
    /// Server name (from the topology, or `/varz`).
    pub name: String,
    /// Site (cluster name, or server name for a standalone leaf).
    pub site: String,
    /// Monitoring address.
    pub monitor: String,
    /// Whether the monitoring endpoint answered.
    pub up: bool,
    /// Whether `/healthz` said OK.
    pub healthy: bool,
    /// The `/healthz` error, if any.
    pub health_error: Option<String>,
    /// JetStream domain.
    pub domain: Option<String>,
    /// Resident memory in bytes (`/varz` `mem`).
    pub mem_bytes: u64,
    /// Client connections.
    pub connections: u64,
    /// Cluster routes.
    pub routes: u64,
    /// Leaf node links: remote server names (hub side) or hub names (leaf side).
    pub leafnodes: Vec<String>,
    /// Clusters this server has outbound NATS gateway links to.
    pub gateways_out: Vec<String>,
    /// Clusters with inbound NATS gateway links to this server.
    pub gateways_in: Vec<String>,
    /// Streams this server leads.
    pub streams: Vec<StreamStatus>,
}

/// The whole deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyStatus {
    /// Every server, in topology order.
    pub servers: Vec<ServerStatus>,
}

impl TopologyStatus {
    /// Whether every server is up and healthy.
    pub fn all_healthy(&self) -> bool {
        !self.servers.is_empty() && self.servers.iter().all(|s| s.up && s.healthy)
    }

    /// The stream named `name` at `site`, from its leader (edge and facility
    /// copies share a name in different domains, hence the site).
    pub fn stream(&self, site: &str, name: &str) -> Option<&StreamStatus> {
        self.servers
            .iter()
            .filter(|s| s.site == site)
            .flat_map(|s| s.streams.iter())
            .find(|s| s.name == name)
    }

    /// Site names in order of first appearance.
    pub fn sites(&self) -> Vec<String> {
        let mut sites: Vec<String> = Vec::new();
        for server in &self.servers {
            if !sites.contains(&server.site) {
                sites.push(server.site.clone());
            }
        }
        sites
    }

    /// A human-readable report, grouped by site.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for site in self.sites() {
            let servers: Vec<&ServerStatus> =
                self.servers.iter().filter(|s| s.site == site).collect();
            let up = servers.iter().filter(|s| s.up).count();
            let _ = writeln!(out, "site {site}: {up}/{} servers up", servers.len());
            for s in &servers {
                if !s.up {
                    let _ = writeln!(out, "  {} ({}): DOWN", s.name, s.monitor);
                    continue;
                }
                let health = if s.healthy {
                    "healthy".to_string()
                } else {
                    format!(
                        "UNHEALTHY: {}",
                        s.health_error.as_deref().unwrap_or("unknown")
                    )
                };
                let _ = writeln!(
                    out,
                    "  {} ({}): {health}, domain {}, mem {:.1} MiB, {} connections, {} routes",
                    s.name,
                    s.monitor,
                    s.domain.as_deref().unwrap_or("-"),
                    s.mem_bytes as f64 / (1024.0 * 1024.0),
                    s.connections,
                    s.routes
                );
                let _ = writeln!(out, "    leaf links: {}", list_or_none(&s.leafnodes));
                if !s.gateways_out.is_empty() || !s.gateways_in.is_empty() {
                    let _ = writeln!(
                        out,
                        "    gateways: out {} / in {}",
                        list_or_none(&s.gateways_out),
                        list_or_none(&s.gateways_in)
                    );
                }
                for st in &s.streams {
                    let _ = writeln!(
                        out,
                        "    stream {}: {} msgs, {} bytes, seq {}..{}, R{}",
                        st.name, st.messages, st.bytes, st.first_seq, st.last_seq, st.replicas
                    );
                    if let Some(m) = &st.mirror {
                        let _ = writeln!(
                            out,
                            "      mirror of {}: lag {}{}",
                            m.name,
                            m.lag,
                            active(m)
                        );
                    }
                    for src in &st.sources {
                        let _ = writeln!(
                            out,
                            "      source {}: lag {}{}",
                            src.name,
                            src.lag,
                            active(src)
                        );
                    }
                    for c in &st.consumers {
                        let _ = writeln!(
                            out,
                            "      consumer {}: pending {}, ack pending {}, redelivered {}, waiting pulls {}",
                            c.name, c.num_pending, c.num_ack_pending, c.num_redelivered, c.num_waiting
                        );
                    }
                }
            }
        }
        out
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn active(origin: &OriginLag) -> String {
    match origin.active_ms {
        Some(ms) => format!(", last active {ms} ms ago"),
        None => ", never active".to_string(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, Value)> {
    let (status, body) = http_get(addr, path, Duration::from_secs(3)).ok()?;
    Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn origin(v: &Value) -> Option<OriginLag> {
    let name = v["name"].as_str()?;
    let external = v["external"]["api"].as_str();
    Some(OriginLag {
        name: match external {
            Some(api) => format!("{name} via {api}"),
            None => name.to_string(),
        },
        lag: u(&v["lag"]),
        // The server reports nanoseconds; -1 when never active.
        active_ms: v["active"]
            .as_i64()
            .filter(|n| *n >= 0)
            .map(|n| n as u64 / 1_000_000),
    })
}

/// Queries one server's monitoring endpoint at `addr`.
pub fn server_status(name: &str, site: &str, addr: SocketAddr) -> ServerStatus {
    let mut status = ServerStatus {
        name: name.to_string(),
        site: site.to_string(),
        monitor: format!("http://{addr}"),
        ..Default::default()
    };
    let Some((_, varz)) = get(addr, "/varz") else {
        if status.name.is_empty() {
            status.name = status.monitor.clone();
        }
        if status.site.is_empty() {
            status.site = "(unreachable)".to_string();
        }
        return status;
    };
    status.up = true;
    if status.name.is_empty() {
        status.name = varz["server_name"].as_str().unwrap_or_default().to_string();
    }
    if status.site.is_empty() {
        status.site = varz["cluster"]["name"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(&status.name)
            .to_string();
    }
    status.mem_bytes = u(&varz["mem"]);
    status.connections = u(&varz["connections"]);
    status.routes = u(&varz["routes"]);
    status.domain = varz["jetstream"]["config"]["domain"]
        .as_str()
        .map(str::to_string);
    match get(addr, "/healthz") {
        Some((200, _)) => status.healthy = true,
        Some((_, body)) => {
            status.health_error = Some(body["error"].as_str().unwrap_or("not healthy").to_string())
        }
        None => status.health_error = Some("no answer".into()),
    }
    if let Some((_, leafz)) = get(addr, "/leafz") {
        for leaf in leafz["leafs"].as_array().into_iter().flatten() {
            let name = leaf["name"].as_str().unwrap_or("?");
            let account = leaf["account"].as_str().unwrap_or("?");
            status.leafnodes.push(format!("{name} (account {account})"));
        }
    }
    if let Some((_, gatewayz)) = get(addr, "/gatewayz") {
        for (key, field) in [("outbound_gateways", 0), ("inbound_gateways", 1)] {
            if let Some(map) = gatewayz[key].as_object() {
                let names: Vec<String> = map.keys().cloned().collect();
                if field == 0 {
                    status.gateways_out = names;
                } else {
                    status.gateways_in = names;
                }
            }
        }
    }
    if let Some((_, jsz)) = get(addr, "/jsz?streams=true&consumers=true&config=true") {
        let server_name = varz["server_name"].as_str().unwrap_or_default();
        for account in jsz["account_details"].as_array().into_iter().flatten() {
            for stream in account["stream_detail"].as_array().into_iter().flatten() {
                let leader = stream["cluster"]["leader"].as_str();
                if leader.is_some_and(|l| l != server_name) {
                    continue;
                }
                let state = &stream["state"];
                let replicas = stream["config"]["num_replicas"].as_u64().unwrap_or(1);
                status.streams.push(StreamStatus {
                    name: stream["name"].as_str().unwrap_or("?").to_string(),
                    messages: u(&state["messages"]),
                    bytes: u(&state["bytes"]),
                    first_seq: u(&state["first_seq"]),
                    last_seq: u(&state["last_seq"]),
                    replicas,
                    mirror: origin(&stream["mirror"]),
                    sources: stream["sources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(origin)
                        .collect(),
                    consumers: stream["consumer_detail"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| ConsumerStatus {
                            name: c["name"].as_str().unwrap_or("?").to_string(),
                            num_pending: u(&c["num_pending"]),
                            num_ack_pending: u(&c["num_ack_pending"]),
                            num_redelivered: u(&c["num_redelivered"]),
                            num_waiting: u(&c["num_waiting"]),
                        })
                        .collect(),
                });
            }
        }
    }
    status
}

/// Status of every planned server.
pub fn collect_status(servers: &[PlannedServer]) -> TopologyStatus {
    TopologyStatus {
        servers: servers
            .iter()
            .map(|p| {
                let addr = format!("{}:{}", p.host, p.ports.monitor)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], p.ports.monitor)));
                server_status(&p.name, &p.site, addr)
            })
            .collect(),
    }
}

/// Status of servers given by monitoring URLs (`http://host:port` or `host:port`);
/// names and sites come from `/varz`.
pub fn collect_status_from_urls(urls: &[String]) -> Result<TopologyStatus, String> {
    let mut servers = Vec::new();
    for url in urls {
        let hostport = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("monitoring URL {url:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("monitoring URL {url:?} resolves to no address"))?;
        servers.push(server_status("", "", addr));
    }
    Ok(TopologyStatus { servers })
}
