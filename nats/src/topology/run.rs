//! Running a whole topology locally: one nats-server process per server, on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::plan::{Plan, PlannedServer, PortMode};
use super::spec::{Role, Topology};
use super::status::{collect_status, TopologyStatus};
use super::TopologyError;
use crate::server::{http_get, NatsServer, ServerError};

/// Builds the options clients of the topology connect with (credentials, inbox prefix...).
pub type ConnectFn = Arc<dyn Fn() -> async_nats::ConnectOptions + Send + Sync>;

/// A started topology: every server running, killed when dropped.
pub struct RunningTopology {
    plan: Plan,
    dir: PathBuf,
    servers: Vec<(PlannedServer, NatsServer)>,
    connect: ConnectFn,
}

impl RunningTopology {
    /// Starts every server of `topology` with stores, configs and logs under
    /// `dir`. Ports come from the file where given, free loopback ports elsewhere.
    ///
    /// Returns once every server answers `/healthz`; call
    /// [`RunningTopology::wait_ready`] before relying on links between sites.
    pub fn start(topology: &Topology, dir: &Path) -> Result<RunningTopology, TopologyError> {
        let mut last = None;
        // A free port can be taken between choosing it and the server binding it.
        for _ in 0..3 {
            let plan = topology.plan(PortMode::FreeWhereMissing)?;
            match RunningTopology::start_plan(plan, dir) {
                Ok(running) => return Ok(running),
                Err(e @ TopologyError::Server(ServerError::NotInstalled)) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Starts every server of a resolved plan (after, e.g., [`Plan::set_leaf_remotes`]).
    pub fn start_plan(plan: Plan, dir: &Path) -> Result<RunningTopology, TopologyError> {
        RunningTopology::start_plan_launched(plan, dir, |_| Vec::new())
    }

    /// Like [`RunningTopology::start_plan`], running each server under the
    /// command `launcher` gives for it (e.g. `ip netns exec <ns>`, to put each
    /// site in its own network namespace); an empty command runs it directly.
    pub fn start_plan_launched(
        plan: Plan,
        dir: &Path,
        launcher: impl Fn(&PlannedServer) -> Vec<String>,
    ) -> Result<RunningTopology, TopologyError> {
        plan.render_into(dir)?;
        let configs: Vec<_> = plan
            .servers
            .iter()
            .map(|s| (s.clone(), plan.server_config(s, dir), launcher(s)))
            .collect();
        // Servers of a cluster wait for each other, so start them side by side.
        let results: Vec<Result<(PlannedServer, NatsServer), ServerError>> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = configs
                    .into_iter()
                    .map(|(planned, config, launcher)| {
                        scope.spawn(move || {
                            NatsServer::start_launched(config, dir, launcher)
                                .map(|server| (planned, server))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(ServerError::Io {
                                context: "starting a server".into(),
                                source: std::io::Error::other("start-up thread panicked"),
                            })
                        })
                    })
                    .collect()
            });
        let mut servers = Vec::new();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(pair) => servers.push(pair),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            // `servers` is dropped here: the started ones are killed.
            return Err(e.into());
        }
        let connect = default_connect(&plan.topology);
        Ok(RunningTopology {
            plan,
            dir: dir.to_path_buf(),
            servers,
            connect,
        })
    }

    /// Sets how clients of this topology connect (credentials for an auth
    /// callout deployment, custom inbox prefix...). Used by [`RunningTopology::connect`]
    /// and [`RunningTopology::create_streams`].
    pub fn set_connect(&mut self, connect: ConnectFn) {
        self.connect = connect;
    }

    /// The resolved plan (servers, ports, topology with ports filled in).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The topology with the ports in use.
    pub fn topology(&self) -> &Topology {
        &self.plan.topology
    }

    /// Directory of configs, logs and stores.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every server with its plan, sites in file order.
    pub fn servers(&self) -> impl Iterator<Item = (&PlannedServer, &NatsServer)> {
        self.servers.iter().map(|(p, s)| (p, s))
    }

    /// The server named `name`.
    pub fn server(&self, name: &str) -> Result<&NatsServer, TopologyError> {
        self.servers
            .iter()
            .find(|(p, _)| p.name == name)
            .map(|(_, s)| s)
            .ok_or_else(|| unknown("server", name))
    }

    /// The server named `name`, to kill, stop or restart it.
    pub fn server_mut(&mut self, name: &str) -> Result<&mut NatsServer, TopologyError> {
        self.servers
            .iter_mut()
            .find(|(p, _)| p.name == name)
            .map(|(_, s)| s)
            .ok_or_else(|| unknown("server", name))
    }

    /// Names of the servers of `site`.
    pub fn site_server_names(&self, site: &str) -> Vec<String> {
        self.plan
            .site_servers(site)
            .map(|s| s.name.clone())
            .collect()
    }

    /// SIGKILLs server `name` (a crash).
    pub fn kill(&mut self, name: &str) -> Result<(), TopologyError> {
        self.server_mut(name)?.kill();
        Ok(())
    }

    /// Stops server `name` with SIGTERM.
    pub fn stop(&mut self, name: &str) -> Result<(), TopologyError> {
        self.server_mut(name)?.stop();
        Ok(())
    }

    /// Starts server `name` again with the same config, ports and store.
    pub fn restart(&mut self, name: &str) -> Result<(), TopologyError> {
        Ok(self.server_mut(name)?.restart()?)
    }

    /// Stops every server (SIGTERM), edges first so leaf links close cleanly.
    pub fn stop_all(&mut self) {
        for role in [Role::Edge, Role::Partner, Role::Facility] {
            for (planned, server) in self.servers.iter_mut() {
                if planned.role == role {
                    server.stop();
                }
            }
        }
    }

    /// Client URLs of the servers of `site`.
    pub fn site_urls(&self, site: &str) -> Result<Vec<String>, TopologyError> {
        let urls: Vec<String> = self
            .plan
            .site_servers(site)
            .map(PlannedServer::client_url)
            .collect();
        if urls.is_empty() {
            return Err(unknown("site", site));
        }
        Ok(urls)
    }

    /// Client URL of an edge leaf (`None`: the first edge site).
    pub fn edge_url(&self, edge: Option<&str>) -> Result<String, TopologyError> {
        let site = self.site_name(Role::Edge, edge)?;
        Ok(self.site_urls(&site)?.remove(0))
    }

    /// Client URLs of the facility cluster.
    pub fn facility_urls(&self) -> Vec<String> {
        self.site_urls(&self.plan.topology.facility().name)
            .unwrap_or_default()
    }

    /// Client URLs of a partner site (`None`: the first partner site).
    pub fn partner_urls(&self, partner: Option<&str>) -> Result<Vec<String>, TopologyError> {
        let site = self.site_name(Role::Partner, partner)?;
        self.site_urls(&site)
    }

    /// The name of site `name`, or of the first site with `role`, checking its role.
    pub fn site_name(&self, role: Role, name: Option<&str>) -> Result<String, TopologyError> {
        let topology = &self.plan.topology;
        let site = match name {
            Some(name) => topology.site(name).filter(|s| s.role == role),
            None => topology.sites_with(role).next(),
        };
        site.map(|s| s.name.clone())
            .ok_or_else(|| unknown(role.as_str(), name.unwrap_or("(first)")))
    }

    /// Connects to the servers of `site` with the topology's connect options.
    pub async fn connect(&self, site: &str) -> Result<async_nats::Client, TopologyError> {
        let urls = self.site_urls(site)?;
        (self.connect)()
            .connect(urls)
            .await
            .map_err(|e| TopologyError::Nats(format!("connecting to site {site}: {e}")))
    }

    fn monitor_addrs(&self) -> Vec<(PlannedServer, SocketAddr)> {
        self.servers
            .iter()
            .map(|(p, s)| (p.clone(), s.monitor_addr()))
            .collect()
    }

    /// Waits until every running server is healthy, clusters have their routes,
    /// NATS gateways are connected and every edge has its leaf node link.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), TopologyError> {
        let servers = self.monitor_addrs();
        let plan = self.plan.clone();
        tokio::task::spawn_blocking(move || wait_ready_blocking(&plan, &servers, timeout))
            .await
            .map_err(|e| TopologyError::Nats(format!("waiting for readiness: {e}")))?
    }

    /// Creates (or updates) every stream copy of the topology: edge streams,
    /// facility streams sourcing them, partner mirrors. Retries while the
    /// JetStream meta leader is being elected, up to `timeout`.
    pub async fn create_streams(&self, timeout: Duration) -> Result<Vec<String>, TopologyError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut created = Vec::new();
        for placement in self.plan.topology.stream_placements() {
            let client = self.connect(&placement.site).await?;
            let js = jetstream::new(client);
            loop {
                let attempt = tokio::time::timeout(
                    Duration::from_secs(5),
                    js.create_or_update_stream(placement.config.clone()),
                )
                .await;
                match attempt {
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) if tokio::time::Instant::now() >= deadline => {
                        return Err(TopologyError::Nats(format!(
                            "creating stream {} at site {}: {e}",
                            placement.config.name, placement.site
                        )))
                    }
                    Err(_) if tokio::time::Instant::now() >= deadline => {
                        return Err(TopologyError::Timeout(format!(
                            "creating stream {} at site {}",
                            placement.config.name, placement.site
                        )))
                    }
                    _ => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
            created.push(format!("{}@{}", placement.config.name, placement.site));
        }
        Ok(created)
    }

    /// Health of every server and stream, from the monitoring endpoints.
    pub async fn status(&self) -> TopologyStatus {
        let plan = self.plan.clone();
        tokio::task::spawn_blocking(move || collect_status(&plan.servers))
            .await
            .unwrap_or_default()
    }
}

/// Plain connections, or TLS with the topology's CA (and client certificate
/// when the servers verify clients).
fn default_connect(topology: &Topology) -> ConnectFn {
    match topology.tls.clone() {
        None => Arc::new(async_nats::ConnectOptions::new),
        Some(tls) => Arc::new(move || {
            let mut options = async_nats::ConnectOptions::new().require_tls(true);
            if let Some(ca) = &tls.ca_file {
                options = options.add_root_certificates(PathBuf::from(ca));
            }
            if tls.verify {
                options = options.add_client_certificate(
                    PathBuf::from(&tls.cert_file),
                    PathBuf::from(&tls.key_file),
                );
            }
            options
        }),
    }
}

fn unknown(kind: &'static str, name: &str) -> TopologyError {
    TopologyError::Unknown {
        kind,
        name: name.to_string(),
    }
}

fn get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    match http_get(addr, path, Duration::from_secs(2)) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// What is not ready yet on one server, or `None` when it is ready.
fn not_ready(plan: &Plan, server: &PlannedServer, addr: SocketAddr) -> Option<String> {
    if !matches!(
        http_get(addr, "/healthz", Duration::from_secs(2)),
        Ok((200, _))
    ) {
        return Some(format!("{}: /healthz not OK", server.name));
    }
    if server.role == Role::Edge {
        let Some(leafz) = get_json(addr, "/leafz") else {
            return Some(format!("{}: /leafz unreachable", server.name));
        };
        if leafz["leafnodes"].as_u64().unwrap_or(0) == 0 {
            return Some(format!("{}: no leaf node link to the hub", server.name));
        }
        return None;
    }
    let size = plan.site_servers(&server.site).count() as u64;
    if size > 1 {
        let Some(routez) = get_json(addr, "/routez") else {
            return Some(format!("{}: /routez unreachable", server.name));
        };
        if routez["num_routes"].as_u64().unwrap_or(0) < size - 1 {
            return Some(format!("{}: cluster routes not all up", server.name));
        }
    }
    if server.ports.gateway.is_some() {
        let Some(gatewayz) = get_json(addr, "/gatewayz") else {
            return Some(format!("{}: /gatewayz unreachable", server.name));
        };
        let others = plan
            .topology
            .sites
            .iter()
            .filter(|s| s.role != Role::Edge && s.name != server.site);
        for other in others {
            if gatewayz["outbound_gateways"][&other.name].is_null() {
                return Some(format!(
                    "{}: no NATS gateway to {}",
                    server.name, other.name
                ));
            }
        }
    }
    None
}

fn wait_ready_blocking(
    plan: &Plan,
    servers: &[(PlannedServer, SocketAddr)],
    timeout: Duration,
) -> Result<(), TopologyError> {
    let deadline = Instant::now() + timeout;
    loop {
        let pending: Vec<String> = servers
            .iter()
            .filter_map(|(p, addr)| not_ready(plan, p, *addr))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TopologyError::Timeout(format!(
                "topology not ready after {timeout:?}: {}",
                pending.join("; ")
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
