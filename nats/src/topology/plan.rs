//! Resolving a topology into concrete servers with ports.
//!
//! Ports come from the file (explicit, or `port_base`), then — for
//! [`PortMode::FreeWhereMissing`] — from free loopback ports, or — for
//! rendering onto real hosts — from the standard NATS ports when every
//! server has a host of its own.

use std::collections::{BTreeMap, BTreeSet};

use super::spec::{Role, Topology};
use super::TopologyError;

/// Standard NATS ports, used when each server runs on its own host.
pub const STANDARD_PORTS: Ports = Ports {
    client: 4222,
    monitor: 8222,
    cluster: Some(6222),
    gateway: Some(7222),
    leafnode: Some(7422),
};

/// How ports missing from the file are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMode {
    /// Missing ports are an error unless every server has its own host (then
    /// the standard ports are used). For rendering real deployments.
    FromFile,
    /// Missing ports are free loopback ports chosen now. For local runs and tests.
    FreeWhereMissing,
}

/// The ports of one server; `None` where the server has no such listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Client port.
    pub client: u16,
    /// HTTP monitoring port.
    pub monitor: u16,
    /// Cluster route port (facility and partner servers).
    pub cluster: Option<u16>,
    /// NATS gateway port (when there is more than one cluster).
    pub gateway: Option<u16>,
    /// Leaf node listener port (facility servers, when there are edges).
    pub leafnode: Option<u16>,
}

/// One server of a resolved topology.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedServer {
    /// Server name.
    pub name: String,
    /// Site name (also the cluster and NATS gateway name).
    pub site: String,
    /// Role of the site.
    pub role: Role,
    /// Address others use to reach it.
    pub host: String,
    /// Address it listens on.
    pub listen: String,
    /// Its ports.
    pub ports: Ports,
    /// Its JetStream domain.
    pub domain: String,
    /// `host:port` other clusters dial for its NATS gateway, when not `host`
    /// and its gateway port.
    pub gateway_advertise: Option<String>,
}

impl PlannedServer {
    /// Client URL.
    pub fn client_url(&self) -> String {
        format!("nats://{}:{}", self.host, self.ports.client)
    }

    /// Monitoring base URL.
    pub fn monitor_url(&self) -> String {
        format!("http://{}:{}", self.host, self.ports.monitor)
    }

    /// `host:port` other clusters dial for its NATS gateway; `None` without one.
    pub fn gateway_addr(&self) -> Option<String> {
        let port = self.ports.gateway?;
        Some(
            self.gateway_advertise
                .clone()
                .unwrap_or_else(|| format!("{}:{port}", self.host)),
        )
    }
}

/// A topology resolved into servers with ports: what is rendered and started.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The topology, with the ports of the plan written back into it.
    pub topology: Topology,
    /// Every server, sites in file order.
    pub servers: Vec<PlannedServer>,
    /// Leaf node remote URLs per edge site, overriding the hub's listeners.
    pub leaf_remotes: BTreeMap<String, Vec<String>>,
}

impl Plan {
    /// Resolves `topology` into servers and ports.
    pub fn new(topology: &Topology, mode: PortMode) -> Result<Plan, TopologyError> {
        let clusters = topology
            .sites
            .iter()
            .filter(|s| s.role != Role::Edge)
            .count();
        let has_edges = topology.sites_with(Role::Edge).next().is_some();
        let all: Vec<(usize, usize)> = topology
            .sites
            .iter()
            .enumerate()
            .flat_map(|(si, site)| (0..site.server_count()).map(move |i| (si, i)))
            .collect();
        let hosts: Vec<String> = all
            .iter()
            .map(|&(si, i)| {
                let site = &topology.sites[si];
                site.server_specs()[i]
                    .host
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1".to_string())
            })
            .collect();
        let unique_hosts = hosts.iter().collect::<BTreeSet<_>>().len() == hosts.len();
        let mut resolved = topology.clone();
        let mut servers = Vec::new();
        // Listeners stay bound until every port is chosen, so no port is handed out twice.
        let mut held: Vec<std::net::TcpListener> = Vec::new();
        for (k, &(si, i)) in all.iter().enumerate() {
            let site = &topology.sites[si];
            let spec = &site.server_specs()[i];
            let wants_cluster = site.role != Role::Edge;
            let wants_gateway = site.role != Role::Edge && clusters > 1;
            let wants_leafnode = site.role == Role::Facility && has_edges;
            let base = topology
                .port_base
                .map(|b| u32::from(b) + 10 * k as u32)
                .filter(|b| *b + 4 <= u32::from(u16::MAX));
            if topology.port_base.is_some() && base.is_none() {
                return Err(TopologyError::Plan(format!(
                    "port_base {} leaves no room for server {:?} (number {k})",
                    topology.port_base.unwrap_or(0),
                    spec.name
                )));
            }
            let mut pick = |explicit: Option<u16>,
                            offset: u32,
                            standard: u16,
                            what: &str|
             -> Result<u16, TopologyError> {
                if let Some(port) = explicit {
                    return Ok(port);
                }
                if let Some(base) = base {
                    return Ok((base + offset) as u16);
                }
                match mode {
                    PortMode::FreeWhereMissing => {
                        let listener =
                            crate::server::bind_free_port().map_err(|e| TopologyError::Io {
                                context: "binding a free port".into(),
                                source: e,
                            })?;
                        let port = listener
                            .local_addr()
                            .map_err(|e| TopologyError::Io {
                                context: "reading a bound port".into(),
                                source: e,
                            })?
                            .port();
                        held.push(listener);
                        Ok(port)
                    }
                    PortMode::FromFile if unique_hosts => Ok(standard),
                    PortMode::FromFile => Err(TopologyError::Plan(format!(
                        "server {:?} has no {what} port: servers share a host, so give \
                         `port_base` or the server's ports in the file",
                        spec.name
                    ))),
                }
            };
            let ports = Ports {
                client: pick(spec.client_port, 0, STANDARD_PORTS.client, "client")?,
                monitor: pick(spec.monitor_port, 1, STANDARD_PORTS.monitor, "monitor")?,
                cluster: wants_cluster
                    .then(|| pick(spec.cluster_port, 2, 6222, "cluster"))
                    .transpose()?,
                gateway: wants_gateway
                    .then(|| pick(spec.gateway_port, 3, 7222, "gateway"))
                    .transpose()?,
                leafnode: wants_leafnode
                    .then(|| pick(spec.leafnode_port, 4, 7422, "leafnode"))
                    .transpose()?,
            };
            let host = hosts[k].clone();
            let listen = spec.listen.clone().unwrap_or_else(|| host.clone());
            let domain = if site.role == Role::Edge {
                site.edge_domain()
            } else {
                topology.hub_domain.clone()
            };
            servers.push(PlannedServer {
                name: spec.name.clone(),
                site: site.name.clone(),
                role: site.role,
                host,
                listen,
                ports,
                domain,
                gateway_advertise: spec.gateway_advertise.clone(),
            });
        }
        check_port_conflicts(&servers)?;
        // Write the resolved servers back so that the topology can be saved
        // and used by `status` with the ports actually in use.
        for site in resolved.sites.iter_mut() {
            site.servers = servers
                .iter()
                .filter(|s| s.site == site.name)
                .map(|s| super::spec::ServerSpec {
                    name: s.name.clone(),
                    host: Some(s.host.clone()),
                    listen: (s.listen != s.host).then(|| s.listen.clone()),
                    client_port: Some(s.ports.client),
                    monitor_port: Some(s.ports.monitor),
                    cluster_port: s.ports.cluster,
                    gateway_port: s.ports.gateway,
                    leafnode_port: s.ports.leafnode,
                    gateway_advertise: s.gateway_advertise.clone(),
                })
                .collect();
            site.size = None;
            site.host = None;
        }
        resolved.port_base = None;
        let leaf_remotes = topology
            .sites_with(Role::Edge)
            .filter(|s| !s.hub_urls.is_empty())
            .map(|s| (s.name.clone(), s.hub_urls.clone()))
            .collect();
        Ok(Plan {
            topology: resolved,
            servers,
            leaf_remotes,
        })
    }

    /// The servers of one site.
    pub fn site_servers<'a>(&'a self, site: &'a str) -> impl Iterator<Item = &'a PlannedServer> {
        self.servers.iter().filter(move |s| s.site == site)
    }

    /// The server named `name`.
    pub fn server(&self, name: &str) -> Option<&PlannedServer> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// Makes an edge's leaf node connect to `urls` instead of the hub's
    /// listeners (e.g. through a link that a test can cut).
    pub fn set_leaf_remotes(&mut self, edge: &str, urls: Vec<String>) {
        self.leaf_remotes.insert(edge.to_string(), urls);
        if let Some(site) = self.topology.site_mut(edge) {
            site.hub_urls = self.leaf_remotes[edge].clone();
        }
    }

    /// Makes the other clusters reach server `name`'s NATS gateway at
    /// `addr` (`host:port`; e.g. through a link that a test delays or cuts),
    /// and the server advertise it. `false` if there is no such server.
    pub fn set_gateway_advertise(&mut self, name: &str, addr: String) -> bool {
        let Some(server) = self.servers.iter_mut().find(|s| s.name == name) else {
            return false;
        };
        server.gateway_advertise = Some(addr.clone());
        let site = server.site.clone();
        if let Some(spec) = self
            .topology
            .site_mut(&site)
            .and_then(|s| s.servers.iter_mut().find(|s| s.name == name))
        {
            spec.gateway_advertise = Some(addr);
        }
        true
    }

    /// Leaf node listener addresses (`host:port`) of the hub of edge site `edge`.
    pub fn hub_leafnode_addrs(&self, edge: &str) -> Vec<String> {
        let hub = self
            .topology
            .site(edge)
            .and_then(|s| s.hub.clone())
            .unwrap_or_else(|| self.topology.facility().name.clone());
        self.site_servers(&hub)
            .filter_map(|s| s.ports.leafnode.map(|p| format!("{}:{p}", s.host)))
            .collect()
    }
}

fn check_port_conflicts(servers: &[PlannedServer]) -> Result<(), TopologyError> {
    let mut used: BTreeMap<(String, u16), String> = BTreeMap::new();
    for server in servers {
        let p = server.ports;
        for (what, port) in [
            ("client", Some(p.client)),
            ("monitor", Some(p.monitor)),
            ("cluster", p.cluster),
            ("gateway", p.gateway),
            ("leafnode", p.leafnode),
        ] {
            let Some(port) = port else { continue };
            let label = format!("{} {what}", server.name);
            if let Some(other) = used.insert((server.host.clone(), port), label.clone()) {
                return Err(TopologyError::Plan(format!(
                    "port {port} on {} is used twice: {other} and {label}",
                    server.host
                )));
            }
        }
    }
    Ok(())
}
