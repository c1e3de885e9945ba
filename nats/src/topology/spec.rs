//! The topology file: sites, servers, streams and deployment options, as data.
//!
//! A topology is loaded from TOML ([`Topology::load`]) and validated before
//! anything is rendered or started, so that a mistake names the file and the
//! field instead of surfacing as a nats-server start-up failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TopologyError;
use crate::subjects::validate_token;

/// Largest topology file read, so that a wrong path (a data file) fails fast.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Largest number of servers in one site; a typo like `size = 3000` is refused.
pub const MAX_SITE_SIZE: usize = 15;

/// A whole deployment: facility edge leaf nodes, the facility cluster, partner clusters and streams.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Name of the deployment (used in directory and log names).
    pub name: String,
    /// JetStream domain shared by the facility and partner clusters (one supercluster).
    #[serde(default = "default_hub_domain")]
    pub hub_domain: String,
    /// Largest message payload in bytes (default 8 MiB, the size of the largest detector chunk).
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// Ports for servers without explicit ports: server number k (in file order,
    /// from 0) gets `port_base + 10k` (client), `+1` (monitoring), `+2` (cluster),
    /// `+3` (gateway) and `+4` (leaf nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_base: Option<u16>,
    /// Root of JetStream stores on the hosts: `<store_root>/<server>/jetstream`.
    /// Without it, stores go under the render or run directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_root: Option<PathBuf>,
    /// Largest JetStream file storage per server, in bytes (default 16 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_store: Option<u64>,
    /// Largest JetStream memory storage per server, in bytes (default 256 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_store: Option<u64>,
    /// TLS for client, cluster, gateway and leaf node connections; rendered when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Authentication blocks and leaf node credentials (the extension point for the
    /// gateway's auth callout).
    #[serde(default, skip_serializing_if = "AuthSpec::is_empty")]
    pub auth: AuthSpec,
    /// JetStream `sync_interval` of the facility's servers (edge and
    /// facility sites), where the agents' acknowledgements come from.
    /// Default `always`: each message is fsynced before it is acknowledged,
    /// so an acknowledged message survives a power cut. A duration (`2m`,
    /// the server's own default) trades that for speed; partner sites keep
    /// the server's default (their data can be fetched again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility_sync_interval: Option<String>,
    /// The sites.
    pub sites: Vec<SiteSpec>,
    /// Where each instrument's stream lives.
    #[serde(default)]
    pub streams: Vec<StreamSpec>,
}

fn default_hub_domain() -> String {
    "hub".to_string()
}

fn default_max_payload() -> usize {
    8 * 1024 * 1024
}

/// The part a site plays in the deployment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A facility edge leaf node: one server with its own JetStream domain that
    /// keeps accepting data while the link to the facility cluster is down.
    Edge,
    /// The facility cluster, hub of the leaf nodes and member of the supercluster.
    Facility,
    /// A partner-site cluster joined to the supercluster with NATS gateways.
    Partner,
}

impl Role {
    /// Lower-case name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Facility => "facility",
            Role::Partner => "partner",
        }
    }
}

/// One site: a leaf node or a cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Site name; also the cluster and NATS gateway name.
    pub name: String,
    /// What the site is.
    pub role: Role,
    /// Number of servers when `servers` is not given (named `<site>-1`..`<site>-N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// Host of the generated servers (default 127.0.0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The servers, when they are given one by one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerSpec>,
    /// JetStream domain of an edge leaf (default: the site name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// For an edge: the facility site its leaf node connects to (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// For an edge: leaf node remote URLs to use instead of the hub's leaf node
    /// listeners (a load balancer, a WAN address, a proxy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hub_urls: Vec<String>,
    /// Extra configuration blocks rendered into every server of this site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<String>,
    /// Files `include`d by every server of this site (relative to the config file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
}

/// One server given explicitly.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// Server name, unique in the deployment.
    pub name: String,
    /// Address other servers and clients use to reach it (default 127.0.0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Address it listens on (default: `host`; `0.0.0.0` on real hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Client port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_port: Option<u16>,
    /// HTTP monitoring port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_port: Option<u16>,
    /// Cluster route port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_port: Option<u16>,
    /// NATS gateway (supercluster) port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_port: Option<u16>,
    /// Leaf node listener port (facility servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leafnode_port: Option<u16>,
    /// `host:port` other clusters dial to reach this server's NATS gateway,
    /// when it differs from `host` and the gateway port (a NAT, a port
    /// forward, a relay): rendered as the server's gateway `advertise` and
    /// into the other sites' gateway URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_advertise: Option<String>,
}

/// TLS files, rendered into every listener and leaf node remote when given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// Server certificate (PEM).
    pub cert_file: String,
    /// Server private key (PEM).
    pub key_file: String,
    /// CA bundle that signs peer certificates (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Require and verify client certificates on the client port.
    #[serde(default)]
    pub verify: bool,
    /// Also use TLS on cluster routes, gateways and leaf nodes (default true).
    #[serde(default = "default_true")]
    pub internal: bool,
}

fn default_true() -> bool {
    true
}

/// Authentication: blocks rendered verbatim, so that the gateway's auth
/// callout (accounts, `authorization { auth_callout {...} }`) plugs in
/// without this module knowing it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// Blocks rendered into every server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<String>,
    /// Files `include`d by every server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Blocks rendered into every server of one site (site name to blocks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub site_blocks: BTreeMap<String, Vec<String>>,
    /// Account both ends of every leaf node link bind to (e.g. the facility
    /// data account); without it the default account is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_account: Option<String>,
    /// Credentials file of the leaf node remotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_credentials: Option<String>,
    /// Body of the hub's `leafnodes { authorization { ... } }` block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leafnode_authorization: Option<String>,
    /// Sites (facility or partner) whose servers carry the gateway's auth
    /// callout: accounts, issuer, xkey and system account.
    /// `lclstream nats render --gateway-keys DIR` renders its blocks into
    /// them; rendering without the blocks is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callout_sites: Vec<String>,
    /// lclstream gateways (auth callout, requests, meter) per callout site,
    /// e.g. `{ facility = 3 }`: `lclstream nats render --gateway-keys DIR`
    /// writes one configuration each, sharing quota state through JetStream.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gateways: BTreeMap<String, u32>,
}

impl AuthSpec {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == AuthSpec::default()
    }
}

/// Retention limits of one copy of a stream; unset fields keep the defaults.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest size in bytes (oldest messages are discarded beyond it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<i64>,
    /// Largest number of messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msgs: Option<i64>,
    /// Oldest message kept, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// Number of replicas (default: 3, or the site's size if smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
}

/// Where one instrument's stream is placed, sourced and mirrored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Instrument, e.g. `mfx`: the stream captures `lcls.<instrument>.>`.
    pub instrument: String,
    /// Edge sites holding the stream where data is published; the facility stream sources them.
    #[serde(default)]
    pub edges: Vec<String>,
    /// The facility site holding the facility stream (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<String>,
    /// Partner sites holding a mirror of the facility stream.
    #[serde(default)]
    pub partners: Vec<String>,
    /// Window of `Nats-Msg-Id` deduplication, in seconds (default 20 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_window_secs: Option<u64>,
    /// Limits of the edge copies.
    #[serde(default, skip_serializing_if = "is_default_limits")]
    pub edge_limits: Limits,
    /// Limits of the facility copy.
    #[serde(default, skip_serializing_if = "is_default_limits")]
    pub facility_limits: Limits,
    /// Limits of the partner mirrors.
    #[serde(default, skip_serializing_if = "is_default_limits")]
    pub partner_limits: Limits,
}

fn is_default_limits(limits: &Limits) -> bool {
    *limits == Limits::default()
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn load(path: impl AsRef<Path>) -> Result<Topology, TopologyError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| TopologyError::Io {
            context: format!("reading {file}"),
            source: e,
        })?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(TopologyError::Invalid {
                file,
                message: format!(
                    "file is {} bytes; a topology file is at most {MAX_FILE_BYTES}",
                    meta.len()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| TopologyError::Io {
            context: format!("reading {file}"),
            source: e,
        })?;
        Topology::parse(&text, &file)
    }

    /// Parses and validates topology text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Topology, TopologyError> {
        let topology: Topology = toml::from_str(text).map_err(|e| TopologyError::Invalid {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        topology
            .validate()
            .map_err(|message| TopologyError::Invalid {
                file: file.to_string(),
                message,
            })?;
        Ok(topology)
    }

    /// The topology as TOML (with whatever ports were filled in).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks names, roles, references, sizes and port conflicts.
    pub fn validate(&self) -> Result<(), String> {
        validate_token("name", &self.name)?;
        validate_token("hub_domain", &self.hub_domain)?;
        if self.max_payload == 0 || self.max_payload > 64 * 1024 * 1024 {
            return Err(format!(
                "max_payload = {} must be between 1 and 67108864 (64 MiB)",
                self.max_payload
            ));
        }
        if self.sites.is_empty() {
            return Err("no [[sites]] given".into());
        }
        for site in &self.auth.callout_sites {
            match self.sites.iter().find(|s| &s.name == site) {
                None => {
                    return Err(format!(
                        "auth.callout_sites names {site:?}, which is not a site"
                    ))
                }
                Some(s) if s.role == Role::Edge => {
                    return Err(format!(
                        "auth.callout_sites names {site:?}, an edge site: edges keep their own \
                         accounts (site blocks); the callout runs at facility and partner sites"
                    ))
                }
                Some(_) => {}
            }
        }
        for (site, count) in &self.auth.gateways {
            if !self.auth.callout_sites.contains(site) {
                return Err(format!(
                    "auth.gateways names {site:?}, which is not in auth.callout_sites: \
                     gateways answer the callout of their own site"
                ));
            }
            if !(1..=9).contains(count) {
                return Err(format!(
                    "auth.gateways.{site} = {count}: give 1 to 9 gateways (2 or 3 for no \
                     single point of failure)"
                ));
            }
        }
        let mut site_names = BTreeSet::new();
        let mut domains = BTreeSet::from([self.hub_domain.clone()]);
        let mut server_names = BTreeSet::new();
        for (i, site) in self.sites.iter().enumerate() {
            let at = format!("sites[{i}]");
            validate_token(&format!("{at}.name"), &site.name)?;
            if !site_names.insert(site.name.clone()) {
                return Err(format!("{at}.name: site {:?} is defined twice", site.name));
            }
            match (site.size, site.servers.is_empty()) {
                (Some(_), false) => {
                    return Err(format!(
                        "site {:?}: give either `size` or [[sites.servers]], not both",
                        site.name
                    ))
                }
                (Some(0), true) => {
                    return Err(format!("site {:?}: size must be at least 1", site.name))
                }
                (Some(n), true) if n > MAX_SITE_SIZE => {
                    return Err(format!(
                        "site {:?}: size {n} is larger than {MAX_SITE_SIZE}",
                        site.name
                    ))
                }
                _ => {}
            }
            if site.servers.len() > MAX_SITE_SIZE {
                return Err(format!(
                    "site {:?}: {} servers is more than {MAX_SITE_SIZE}",
                    site.name,
                    site.servers.len()
                ));
            }
            let count = site.server_count();
            if site.role == Role::Edge {
                if count != 1 {
                    return Err(format!(
                        "site {:?}: an edge leaf node is one server, not {count}",
                        site.name
                    ));
                }
                let domain = site.edge_domain();
                validate_token(&format!("site {:?} domain", site.name), &domain)?;
                if !domains.insert(domain.clone()) {
                    return Err(format!(
                        "site {:?}: JetStream domain {domain:?} is already used (domains must be unique, and differ from hub_domain)",
                        site.name
                    ));
                }
            } else {
                for (field, set) in [
                    ("domain", site.domain.is_some()),
                    ("hub", site.hub.is_some()),
                    ("hub_urls", !site.hub_urls.is_empty()),
                ] {
                    if set {
                        return Err(format!(
                            "site {:?}: `{field}` applies only to edge sites",
                            site.name
                        ));
                    }
                }
            }
            for server in site.server_names() {
                validate_token(&format!("site {:?} server name", site.name), &server)?;
                if !server_names.insert(server.clone()) {
                    return Err(format!("server name {server:?} is used twice"));
                }
            }
        }
        let facilities: Vec<&SiteSpec> = self.sites_with(Role::Facility).collect();
        if facilities.len() != 1 {
            return Err(format!(
                "exactly one site must have role = \"facility\" (found {})",
                facilities.len()
            ));
        }
        for site in self.sites_with(Role::Edge) {
            if let Some(hub) = &site.hub {
                self.expect_role(hub, Role::Facility, &format!("site {:?} hub", site.name))?;
            }
        }
        for (key, _) in self.auth.site_blocks.iter() {
            if self.site(key).is_none() {
                return Err(format!("auth.site_blocks: no site named {key:?}"));
            }
        }
        let mut instruments = BTreeSet::new();
        for (i, stream) in self.streams.iter().enumerate() {
            let at = format!("streams[{i}]");
            validate_token(&format!("{at}.instrument"), &stream.instrument)?;
            if !instruments.insert(stream.instrument.to_ascii_lowercase()) {
                return Err(format!(
                    "{at}: instrument {:?} is listed twice",
                    stream.instrument
                ));
            }
            for edge in &stream.edges {
                self.expect_role(edge, Role::Edge, &format!("{at}.edges"))?;
            }
            if let Some(facility) = &stream.facility {
                self.expect_role(facility, Role::Facility, &format!("{at}.facility"))?;
            }
            for partner in &stream.partners {
                self.expect_role(partner, Role::Partner, &format!("{at}.partners"))?;
            }
            for (name, limits) in [
                ("edge_limits", &stream.edge_limits),
                ("facility_limits", &stream.facility_limits),
                ("partner_limits", &stream.partner_limits),
            ] {
                if let Some(r) = limits.replicas {
                    if !(1..=5).contains(&r) {
                        return Err(format!("{at}.{name}.replicas = {r} must be 1 to 5"));
                    }
                }
                for (field, value) in [
                    ("max_bytes", limits.max_bytes),
                    ("max_msgs", limits.max_msgs),
                ] {
                    if matches!(value, Some(v) if v == 0 || v < -1) {
                        return Err(format!("{at}.{name}.{field} must be positive or -1"));
                    }
                }
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_empty() || tls.key_file.is_empty() {
                return Err("tls: cert_file and key_file must not be empty".into());
            }
        }
        Ok(())
    }

    fn expect_role(&self, name: &str, role: Role, field: &str) -> Result<(), String> {
        match self.site(name) {
            None => Err(format!("{field}: no site named {name:?}")),
            Some(site) if site.role != role => Err(format!(
                "{field}: site {name:?} is a {} site, expected a {} site",
                site.role.as_str(),
                role.as_str()
            )),
            Some(_) => Ok(()),
        }
    }

    /// The site named `name`.
    pub fn site(&self, name: &str) -> Option<&SiteSpec> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The site named `name`, for editing (e.g. setting `hub_urls` in a test).
    pub fn site_mut(&mut self, name: &str) -> Option<&mut SiteSpec> {
        self.sites.iter_mut().find(|s| s.name == name)
    }

    /// Sites with a role, in file order.
    pub fn sites_with(&self, role: Role) -> impl Iterator<Item = &SiteSpec> {
        self.sites.iter().filter(move |s| s.role == role)
    }

    /// The facility site (validation guarantees exactly one).
    pub fn facility(&self) -> &SiteSpec {
        self.sites_with(Role::Facility)
            .next()
            .expect("validated topology has a facility site")
    }

    /// Adds configuration blocks to every server (`site = None`) or to one site's servers.
    ///
    /// This is how the gateway's auth-callout blocks are added from code.
    pub fn add_blocks(&mut self, site: Option<&str>, blocks: Vec<String>) {
        match site {
            None => self.auth.blocks.extend(blocks),
            Some(site) => self
                .auth
                .site_blocks
                .entry(site.to_string())
                .or_default()
                .extend(blocks),
        }
    }

    /// Forgets every port given in the file, so that [`super::RunningTopology::start`]
    /// picks free ones (tests, several topologies on one host).
    pub fn clear_ports(&mut self) {
        self.port_base = None;
        for server in self.sites.iter_mut().flat_map(|s| s.servers.iter_mut()) {
            server.client_port = None;
            server.monitor_port = None;
            server.cluster_port = None;
            server.gateway_port = None;
            server.leafnode_port = None;
        }
    }
}

impl SiteSpec {
    /// Number of servers in the site.
    pub fn server_count(&self) -> usize {
        if self.servers.is_empty() {
            self.size.unwrap_or(1)
        } else {
            self.servers.len()
        }
    }

    /// Names of the site's servers.
    pub fn server_names(&self) -> Vec<String> {
        self.server_specs().into_iter().map(|s| s.name).collect()
    }

    /// The servers, with generated ones filled in from `size` and `host`.
    pub fn server_specs(&self) -> Vec<ServerSpec> {
        if !self.servers.is_empty() {
            return self.servers.clone();
        }
        let count = self.size.unwrap_or(1);
        (1..=count)
            .map(|i| ServerSpec {
                name: if count == 1 && self.role == Role::Edge {
                    self.name.clone()
                } else {
                    format!("{}-{i}", self.name)
                },
                host: self.host.clone(),
                ..Default::default()
            })
            .collect()
    }

    /// JetStream domain of an edge site.
    pub fn edge_domain(&self) -> String {
        self.domain.clone().unwrap_or_else(|| self.name.clone())
    }
}

impl StreamSpec {
    /// Duplicate window in seconds.
    pub fn duplicate_window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.duplicate_window_secs.unwrap_or(20 * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
name = "t"
[[sites]]
name = "edge"
role = "edge"
[[sites]]
name = "fac"
role = "facility"
size = 3
[[sites]]
name = "p1"
role = "partner"
[[streams]]
instrument = "mfx"
edges = ["edge"]
partners = ["p1"]
"#;

    #[test]
    fn parses_a_small_topology() {
        let t = Topology::parse(SMALL, "small.toml").unwrap();
        assert_eq!(t.hub_domain, "hub");
        assert_eq!(t.max_payload, 8 * 1024 * 1024);
        assert_eq!(t.facility().server_names(), ["fac-1", "fac-2", "fac-3"]);
        assert_eq!(t.site("edge").unwrap().server_names(), ["edge"]);
        let again = Topology::parse(&t.to_toml(), "again").unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let cases = [
            (
                SMALL.replace("partners = [\"p1\"]", "partners = [\"nope\"]"),
                "no site named \"nope\"",
            ),
            (
                SMALL.replace("partners = [\"p1\"]", "partners = [\"edge\"]"),
                "is a edge site",
            ),
            (SMALL.replace("size = 3", "size = 3000"), "larger than"),
            (
                SMALL.replace("role = \"facility\"", "role = \"partner\""),
                "exactly one site",
            ),
            (
                SMALL.replace("name = \"p1\"", "name = \"fac\""),
                "defined twice",
            ),
            (
                SMALL.replace("instrument = \"mfx\"", "instrument = \"a.b\""),
                "streams[0].instrument",
            ),
            (format!("{SMALL}\nbogus = 1\n"), "unknown field"),
            (
                SMALL.replace("role = \"edge\"", "role = \"edge\"\nsize = 2"),
                "one server",
            ),
            (
                SMALL.replace(
                    "name = \"t\"",
                    "name = \"t\"\n[auth]\ncallout_sites = [\"fac\"]\ngateways = { p1 = 2 }",
                ),
                "auth.gateways names \"p1\", which is not in auth.callout_sites",
            ),
            (
                SMALL.replace(
                    "name = \"t\"",
                    "name = \"t\"\n[auth]\ncallout_sites = [\"fac\"]\ngateways = { fac = 0 }",
                ),
                "auth.gateways.fac = 0",
            ),
        ];
        for (text, expected) in cases {
            let err = Topology::parse(&text, "bad.toml").unwrap_err().to_string();
            assert!(err.contains("bad.toml"), "{err}");
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
    }
}
