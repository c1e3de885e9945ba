//! Rendering each planned server into a nats-server configuration.
//!
//! Everything topology-specific (cluster routes, NATS gateways, leaf node
//! listeners and remotes, TLS, auth blocks) goes into
//! [`ServerConfig::blocks`], so the launcher stays unaware of topologies.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::plan::{Plan, PlannedServer};
use super::spec::{Role, TlsSpec};
use super::TopologyError;
use crate::server::{quote, JetStreamConfig, ServerConfig};

/// Largest buffered bytes per connection; a few maximum-size messages.
const MAX_PENDING: usize = 64 * 1024 * 1024;

/// Account holding the streams when the topology brings no auth blocks
/// (same name as the gateway's facility account).
pub const DEV_DATA_ACCOUNT: &str = "LCLS";

/// Accounts rendered when the topology brings no auth blocks: a data account
/// with JetStream that anonymous clients and leaf nodes land in, and the
/// system account that leaf nodes together with NATS gateways require.
/// For loopback development and tests only: anyone who can connect can publish.
const DEV_ACCOUNTS: &str = "accounts {
  LCLS {
    jetstream: enabled
    users: [ { user: \"lclstream\", password: \"lclstream\" } ]
  }
  SYS {
    users: [ { user: \"system\", password: \"system\" } ]
  }
}
system_account: SYS
no_auth_user: \"lclstream\"
";

/// Default `sync_interval` of edge and facility servers: fsync before acknowledging.
pub const FACILITY_SYNC_INTERVAL: &str = "always";

impl Plan {
    /// JetStream store directory of `server` when the topology runs or is rendered into `dir`.
    pub fn store_dir(&self, server: &PlannedServer, dir: &Path) -> PathBuf {
        match &self.topology.store_root {
            Some(root) => root.join(&server.name).join("jetstream"),
            None => dir.join(&server.name).join("jetstream"),
        }
    }

    /// The nats-server configuration of `server`, with stores under `dir`.
    pub fn server_config(&self, server: &PlannedServer, dir: &Path) -> ServerConfig {
        let t = &self.topology;
        let mut config = ServerConfig::loopback(
            &server.name,
            server.ports.client,
            server.ports.monitor,
            self.store_dir(server, dir),
        );
        config.host = server.listen.clone();
        config.max_payload = t.max_payload;
        config.max_pending = MAX_PENDING.max(t.max_payload);
        if let Some(js) = config.jetstream.as_mut() {
            *js = JetStreamConfig {
                store_dir: js.store_dir.clone(),
                domain: Some(server.domain.clone()),
                max_memory: t.max_memory_store.unwrap_or(js.max_memory),
                max_file: t.max_file_store.unwrap_or(js.max_file),
                sync_interval: match server.role {
                    Role::Edge | Role::Facility => Some(
                        t.facility_sync_interval
                            .clone()
                            .unwrap_or_else(|| FACILITY_SYNC_INTERVAL.to_string()),
                    ),
                    _ => None,
                },
            };
        }
        let tls = t.tls.as_ref();
        if let Some(tls) = tls {
            config.blocks.push(tls_block("tls", tls, tls.verify, ""));
        }
        if let Some(port) = server.ports.cluster {
            config.blocks.push(self.cluster_block(server, port));
        }
        if let Some(port) = server.ports.gateway {
            config.blocks.push(self.gateway_block(server, port));
        }
        if let Some(port) = server.ports.leafnode {
            config.blocks.push(self.leafnode_hub_block(server, port));
        }
        if server.role == Role::Edge {
            config.blocks.push(self.leafnode_remote_block(server));
        }
        let site_spec = t.site(&server.site);
        let includes = t
            .auth
            .include
            .iter()
            .chain(site_spec.into_iter().flat_map(|s| s.include.iter()));
        for include in includes {
            config.blocks.push(format!("include {}\n", quote(include)));
        }
        if self.uses_dev_accounts() {
            config.blocks.push(DEV_ACCOUNTS.to_string());
        }
        config.blocks.extend(t.auth.blocks.iter().cloned());
        if let Some(blocks) = t.auth.site_blocks.get(&server.site) {
            config.blocks.extend(blocks.iter().cloned());
        }
        if let Some(site) = site_spec {
            config.blocks.extend(site.blocks.iter().cloned());
        }
        config
    }

    /// Whether the development accounts are rendered: no auth blocks, includes or site blocks.
    pub fn uses_dev_accounts(&self) -> bool {
        let t = &self.topology;
        t.auth.blocks.is_empty()
            && t.auth.include.is_empty()
            && t.auth.site_blocks.is_empty()
            && t.sites
                .iter()
                .all(|s| s.blocks.is_empty() && s.include.is_empty())
    }

    /// TLS of routes, gateways and the leaf node listener: mutual, both ends are servers.
    fn internal_tls(&self, indent: &str) -> String {
        match &self.topology.tls {
            Some(tls) if tls.internal => tls_block("tls", tls, true, indent),
            _ => String::new(),
        }
    }

    /// TLS of a leaf node remote: the client side of the link, which presents
    /// its certificate and checks the hub's against the CA.
    fn remote_tls(&self, indent: &str) -> String {
        match &self.topology.tls {
            Some(tls) if tls.internal => tls_block("tls", tls, false, indent),
            _ => String::new(),
        }
    }

    fn scheme(&self, plain: &'static str) -> &'static str {
        match &self.topology.tls {
            Some(tls) if tls.internal => "tls",
            _ => plain,
        }
    }

    fn cluster_block(&self, server: &PlannedServer, port: u16) -> String {
        let size = self.site_servers(&server.site).count();
        // nats-server refuses clustered JetStream (needed with NATS gateways)
        // without routes; a one-server site lists itself, which it recognises and skips.
        let routes: Vec<String> = self
            .site_servers(&server.site)
            .filter(|s| s.name != server.name || size == 1)
            .filter_map(|s| {
                s.ports
                    .cluster
                    .map(|p| quote(&format!("nats-route://{}:{p}", s.host)))
            })
            .collect();
        let mut out = String::new();
        let _ = writeln!(out, "cluster {{");
        let _ = writeln!(out, "  name: {}", quote(&server.site));
        let _ = writeln!(
            out,
            "  listen: {}",
            quote(&format!("{}:{port}", server.listen))
        );
        let _ = writeln!(out, "  routes: [{}]", routes.join(", "));
        out.push_str(&self.internal_tls("  "));
        let _ = writeln!(out, "}}");
        out
    }

    fn gateway_block(&self, server: &PlannedServer, port: u16) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "gateway {{");
        let _ = writeln!(out, "  name: {}", quote(&server.site));
        let _ = writeln!(
            out,
            "  listen: {}",
            quote(&format!("{}:{port}", server.listen))
        );
        if let Some(addr) = &server.gateway_advertise {
            let _ = writeln!(out, "  advertise: {}", quote(addr));
        }
        out.push_str(&self.internal_tls("  "));
        let _ = writeln!(out, "  gateways: [");
        let scheme = self.scheme("nats");
        for site in self.topology.sites.iter().filter(|s| s.role != Role::Edge) {
            if site.name == server.site {
                continue;
            }
            let urls: Vec<String> = self
                .site_servers(&site.name)
                .filter_map(|s| s.gateway_addr())
                .map(|addr| quote(&format!("{scheme}://{addr}")))
                .collect();
            let _ = writeln!(
                out,
                "    {{ name: {}, urls: [{}] }}",
                quote(&site.name),
                urls.join(", ")
            );
        }
        let _ = writeln!(out, "  ]");
        let _ = writeln!(out, "}}");
        out
    }

    fn leafnode_hub_block(&self, server: &PlannedServer, port: u16) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "leafnodes {{");
        let _ = writeln!(
            out,
            "  listen: {}",
            quote(&format!("{}:{port}", server.listen))
        );
        out.push_str(&self.internal_tls("  "));
        // Leaf nodes learn the hub's other listeners from the hub and use them
        // on reconnect; when edges must go through given addresses (a firewall,
        // a NAT, a load balancer), the hub must not advertise its own.
        if !self.leaf_remotes.is_empty() {
            let _ = writeln!(out, "  no_advertise: true");
        }
        if let Some(auth) = &self.topology.auth.leafnode_authorization {
            let _ = writeln!(out, "  authorization {{");
            for line in auth.lines() {
                let _ = writeln!(out, "    {line}");
            }
            let _ = writeln!(out, "  }}");
        }
        let _ = writeln!(out, "}}");
        out
    }

    /// Leaf node remote URLs of edge site `edge`.
    pub fn leaf_remote_urls(&self, edge: &str) -> Vec<String> {
        if let Some(urls) = self.leaf_remotes.get(edge) {
            return urls.clone();
        }
        let scheme = self.scheme("nats-leaf");
        self.hub_leafnode_addrs(edge)
            .into_iter()
            .map(|addr| format!("{scheme}://{addr}"))
            .collect()
    }

    fn leafnode_remote_block(&self, server: &PlannedServer) -> String {
        let auth = &self.topology.auth;
        let urls: Vec<String> = self
            .leaf_remote_urls(&server.site)
            .iter()
            .map(|u| quote(u))
            .collect();
        let mut out = String::new();
        let _ = writeln!(out, "leafnodes {{");
        // Retry quickly after a WAN cut; the default is 1 s already, stated for clarity.
        let _ = writeln!(out, "  reconnect: \"1s\"");
        let _ = writeln!(out, "  remotes: [");
        let _ = writeln!(out, "    {{");
        let _ = writeln!(out, "      urls: [{}]", urls.join(", "));
        let account = auth.leaf_account.clone().or_else(|| {
            self.uses_dev_accounts()
                .then(|| DEV_DATA_ACCOUNT.to_string())
        });
        if let Some(account) = account {
            let _ = writeln!(out, "      account: {}", quote(&account));
        }
        if let Some(creds) = &auth.leaf_credentials {
            let _ = writeln!(out, "      credentials: {}", quote(creds));
        }
        out.push_str(&self.remote_tls("      "));
        let _ = writeln!(out, "    }}");
        let _ = writeln!(out, "  ]");
        let _ = writeln!(out, "}}");
        out
    }

    /// Writes every server's configuration into `dir` as `<server>.conf`, and
    /// the resolved topology as `topology.resolved.toml`. Returns the config paths.
    pub fn render_into(&self, dir: &Path) -> Result<Vec<PathBuf>, TopologyError> {
        std::fs::create_dir_all(dir).map_err(|e| TopologyError::Io {
            context: format!("creating {}", dir.display()),
            source: e,
        })?;
        let auth = &self.topology.auth;
        if let Some(site) = auth
            .callout_sites
            .iter()
            .find(|site| auth.site_blocks.get(*site).is_none_or(|b| b.is_empty()))
        {
            return Err(TopologyError::Plan(format!(
                "the topology asks for the gateway's auth callout at site {site:?} \
                 (auth.callout_sites): render it with `lclstream nats render --gateway-keys DIR`"
            )));
        }
        let mut paths = Vec::new();
        for server in &self.servers {
            let path = dir.join(format!("{}.conf", server.name));
            let text = self.server_config(server, dir).render();
            std::fs::write(&path, text).map_err(|e| TopologyError::Io {
                context: format!("writing {}", path.display()),
                source: e,
            })?;
            paths.push(path);
        }
        let resolved = dir.join("topology.resolved.toml");
        std::fs::write(&resolved, self.topology.to_toml()).map_err(|e| TopologyError::Io {
            context: format!("writing {}", resolved.display()),
            source: e,
        })?;
        Ok(paths)
    }
}

fn tls_block(name: &str, tls: &TlsSpec, verify: bool, indent: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{indent}{name} {{");
    let _ = writeln!(out, "{indent}  cert_file: {}", quote(&tls.cert_file));
    let _ = writeln!(out, "{indent}  key_file: {}", quote(&tls.key_file));
    if let Some(ca) = &tls.ca_file {
        let _ = writeln!(out, "{indent}  ca_file: {}", quote(ca));
    }
    if verify {
        let _ = writeln!(out, "{indent}  verify: true");
    }
    let _ = writeln!(out, "{indent}}}");
    out
}

#[cfg(test)]
mod tests {
    use super::super::plan::PortMode;
    use super::super::spec::Topology;

    const TEXT: &str = r##"
name = "t"
port_base = 20000
[tls]
cert_file = "/etc/nats/server.pem"
key_file = "/etc/nats/server-key.pem"
ca_file = "/etc/nats/ca.pem"
[auth]
blocks = ["accounts { LCLS { jetstream: enabled } }"]
leaf_account = "LCLS"
leaf_credentials = "/etc/nats/leaf.creds"
[auth.site_blocks]
fac = ["# facility only"]
[[sites]]
name = "edge"
role = "edge"
domain = "edge-mfx"
[[sites]]
name = "fac"
role = "facility"
size = 3
[[sites]]
name = "p1"
role = "partner"
size = 1
"##;

    #[test]
    fn renders_routes_gateways_leafnodes_tls_and_auth() {
        let topology = Topology::parse(TEXT, "t.toml").unwrap();
        let plan = topology.plan(PortMode::FromFile).unwrap();
        let dir = std::path::Path::new("/srv/nats");
        let edge = plan
            .server_config(plan.server("edge").unwrap(), dir)
            .render();
        assert!(edge.contains("port: 20000\n"), "{edge}");
        assert!(edge.contains("domain: \"edge-mfx\""), "{edge}");
        assert!(
            edge.contains(
                "\"tls://127.0.0.1:20014\", \"tls://127.0.0.1:20024\", \"tls://127.0.0.1:20034\""
            ),
            "{edge}"
        );
        assert!(edge.contains("account: \"LCLS\""));
        assert!(edge.contains("credentials: \"/etc/nats/leaf.creds\""));
        assert!(edge.contains("max_payload: 8388608"));
        assert!(!edge.contains("cluster {"));
        let fac2 = plan
            .server_config(plan.server("fac-2").unwrap(), dir)
            .render();
        assert!(
            fac2.contains(
                "routes: [\"nats-route://127.0.0.1:20012\", \"nats-route://127.0.0.1:20032\"]"
            ),
            "{fac2}"
        );
        assert!(
            fac2.contains("{ name: \"p1\", urls: [\"tls://127.0.0.1:20043\"] }"),
            "{fac2}"
        );
        assert!(fac2.contains("listen: \"127.0.0.1:20024\""));
        assert!(fac2.contains("domain: \"hub\""));
        assert!(fac2.contains("ca_file: \"/etc/nats/ca.pem\""));
        assert!(fac2.contains("accounts { LCLS"));
        assert!(fac2.contains("# facility only"));
        let p1 = plan
            .server_config(plan.server("p1-1").unwrap(), dir)
            .render();
        assert!(!p1.contains("leafnodes"));
        assert!(!p1.contains("# facility only"));
        assert!(p1.contains("store_dir: \"/srv/nats/p1-1/jetstream\""));
    }

    #[test]
    fn gateway_advertise_reaches_the_other_clusters() {
        let topology = Topology::parse(TEXT, "t.toml").unwrap();
        let mut plan = topology.plan(PortMode::FromFile).unwrap();
        assert!(plan.set_gateway_advertise("p1-1", "gw.p1.example:443".into()));
        assert!(!plan.set_gateway_advertise("nowhere", "x:1".into()));
        let dir = std::path::Path::new("/d");
        let p1 = plan
            .server_config(plan.server("p1-1").unwrap(), dir)
            .render();
        assert!(p1.contains("advertise: \"gw.p1.example:443\""), "{p1}");
        let fac1 = plan
            .server_config(plan.server("fac-1").unwrap(), dir)
            .render();
        assert!(
            fac1.contains("{ name: \"p1\", urls: [\"tls://gw.p1.example:443\"] }"),
            "{fac1}"
        );
        assert!(!fac1.contains("advertise"), "{fac1}");
        // Kept in the resolved topology, so that a saved plan renders alike.
        let saved = plan.topology.site("p1").unwrap().servers[0].clone();
        assert_eq!(
            saved.gateway_advertise.as_deref(),
            Some("gw.p1.example:443")
        );
    }

    #[test]
    fn without_auth_blocks_development_accounts_are_rendered() {
        let text = TEXT
            .split("[[sites]]")
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    "name = \"t\"\nport_base = 20000\n".to_string()
                } else {
                    format!("[[sites]]{part}")
                }
            })
            .collect::<String>();
        let topology = Topology::parse(&text, "t.toml").unwrap();
        let plan = topology.plan(PortMode::FromFile).unwrap();
        assert!(plan.uses_dev_accounts());
        let dir = std::path::Path::new("/d");
        let edge = plan
            .server_config(plan.server("edge").unwrap(), dir)
            .render();
        assert!(edge.contains("system_account: SYS"), "{edge}");
        assert!(edge.contains("no_auth_user: \"lclstream\""), "{edge}");
        assert!(edge.contains("account: \"LCLS\""), "{edge}");
        assert!(edge.contains("\"nats-leaf://127.0.0.1:20014\""), "{edge}");
        assert!(!edge.contains("tls {"), "{edge}");
        let p1 = plan
            .server_config(plan.server("p1-1").unwrap(), dir)
            .render();
        assert!(
            p1.contains("routes: [\"nats-route://127.0.0.1:20042\"]"),
            "a one-server cluster routes to itself: {p1}"
        );
    }

    #[test]
    fn shared_hosts_need_ports_to_render() {
        let text = TEXT.replace("port_base = 20000\n", "");
        let topology = Topology::parse(&text, "t.toml").unwrap();
        let err = topology.plan(PortMode::FromFile).unwrap_err().to_string();
        assert!(err.contains("port_base"), "{err}");
        assert!(topology.plan(PortMode::FreeWhereMissing).is_ok());
    }
}
