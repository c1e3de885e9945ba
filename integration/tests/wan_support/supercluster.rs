//! The rendered multi-site topology across the WAN: the 3-node facility
//! cluster in one namespace, the partner cluster in another, joined by NATS
//! gateway links that cross the WAN through delay relays, with the gateway's
//! auth callout rendered into both sites (`auth.callout_sites`).
//!
//! NATS gateway links go both ways: every server dials every other cluster
//! itself, and learns the other cluster's servers from the addresses they
//! advertise. So each server's gateway gets a relay on the far side of the
//! WAN (listening on the other site's router address) and advertises that
//! relay ([`lclstream_nats::topology::Plan::set_gateway_advertise`]): a
//! facility server reaches the partner only through the partner's relay and
//! the other way round, as two sites behind NAT would.

use std::net::SocketAddr;
use std::time::Duration;

use lclstream_nats::topology::run::ConnectFn;
use lclstream_nats::topology::{PortMode, Role, RunningTopology, Topology};

use super::{Delay, DelayRelay, Lab, LinkShape, Site};

/// Name of the facility site (as in `nats/topologies/test-small.toml`).
pub const FACILITY: &str = "facility";
/// Name of the partner site.
pub const PARTNER: &str = "partner";

/// A running two-cluster deployment across the WAN.
pub struct SuperclusterOverWan {
    /// The facility site's namespace and link.
    pub facility: Site,
    /// The partner site's namespace and link.
    pub partner: Site,
    /// One relay per server's NATS gateway, on the other site's side.
    pub relays: Vec<DelayRelay>,
    /// The servers.
    pub running: RunningTopology,
    /// Configs, logs and stores.
    pub dir: tempfile::TempDir,
}

impl SuperclusterOverWan {
    /// Cuts the two sites apart silently: both sites' WAN connections stall.
    pub fn partition(&self) {
        self.facility.partition().expect("partition the facility");
        self.partner.partition().expect("partition the partner");
    }

    /// Ends [`SuperclusterOverWan::partition`].
    pub fn heal(&self) {
        self.facility.heal().expect("heal the facility");
        self.partner.heal().expect("heal the partner");
    }

    /// Bytes through every relay (towards the gateway listener, back).
    pub fn forwarded(&self) -> (u64, u64) {
        self.relays
            .iter()
            .map(DelayRelay::forwarded)
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }
}

/// Starts `test-small.toml` without its edge (facility and partner
/// clusters, the facility stream and the partner's mirror): each cluster in
/// its own namespace, the partner's behind `partner_link`, every NATS gateway
/// link through a relay adding `delay`. `edit` adds what the deployment
/// needs (the callout's blocks); `connect` is how the test's own clients
/// authenticate. Waits until every gateway link is up and the streams exist.
pub async fn start_supercluster_over_wan(
    lab: &mut Lab,
    partner_link: LinkShape,
    delay: Delay,
    edit: impl FnOnce(&mut Topology),
    connect: ConnectFn,
) -> SuperclusterOverWan {
    let facility = lab
        .add_site("fac", LinkShape::clean())
        .expect("facility site");
    let partner = lab.add_site("ptn", partner_link).expect("partner site");
    let file = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../nats/topologies/test-small.toml");
    let mut topology = Topology::load(file).expect("topology loads");
    topology.sites.retain(|s| s.role != Role::Edge);
    for stream in topology.streams.iter_mut() {
        stream.edges.clear();
    }
    for site in topology.sites.iter_mut() {
        let at = if site.name == FACILITY {
            &facility
        } else {
            &partner
        };
        site.host = Some(at.addr.to_string());
    }
    edit(&mut topology);
    let mut plan = topology
        .plan(PortMode::FreeWhereMissing)
        .expect("topology plans");
    let mut relays = Vec::new();
    let servers: Vec<_> = plan.servers.clone();
    for server in &servers {
        let port = server.ports.gateway.expect("two clusters have gateways");
        let target = SocketAddr::new(server.host.parse().expect("site address"), port);
        // The relay listens where the *other* site reaches the WAN.
        let dialled_from = if server.site == FACILITY {
            &partner
        } else {
            &facility
        };
        let relay = DelayRelay::start(dialled_from.router.into(), target, delay)
            .await
            .expect("relay listens");
        assert!(plan.set_gateway_advertise(&server.name, relay.addr().to_string()));
        relays.push(relay);
    }
    let dir = tempfile::Builder::new()
        .prefix("lclstream-wan-supercluster-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().to_path_buf();
    let (facility_launcher, partner_launcher) = (facility.launcher(), partner.launcher());
    let mut running = tokio::task::spawn_blocking(move || {
        RunningTopology::start_plan_launched(plan, &path, |server| {
            if server.site == FACILITY {
                facility_launcher.clone()
            } else {
                partner_launcher.clone()
            }
        })
    })
    .await
    .unwrap()
    .expect("servers start in their namespaces");
    running.set_connect(connect);
    if let Err(e) = running.wait_ready(Duration::from_secs(45)).await {
        let logs: Vec<String> = running
            .servers()
            .map(|(p, s)| format!("{}:\n{}", p.name, s.log_tail(15)))
            .collect();
        panic!(
            "the NATS gateway links do not come up across the WAN: {e}\n{}",
            logs.join("\n")
        );
    }
    running
        .create_streams(Duration::from_secs(45))
        .await
        .expect("streams created");
    SuperclusterOverWan {
        facility,
        partner,
        relays,
        running,
        dir,
    }
}
