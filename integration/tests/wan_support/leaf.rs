//! A facility edge leaf node and the facility, each in its own namespace, the
//! leaf node link crossing the WAN through a delay relay.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lclstream_nats::topology::{PortMode, RunningTopology, Topology};

use super::{Delay, DelayRelay, Lab, LinkShape, Site};

/// Name of the edge site (as in `nats/topologies/test-small.toml`).
pub const EDGE: &str = "edge";
/// Name of the facility site.
pub const FACILITY: &str = "facility";

/// A running leaf-over-WAN deployment.
pub struct LeafOverWan {
    /// The edge site's namespace and link (shaped, lossy).
    pub edge: Site,
    /// The facility site's namespace and link.
    pub facility: Site,
    /// The relay on the leaf node link (edge to facility leaf node port).
    pub relay: DelayRelay,
    /// The servers.
    pub running: RunningTopology,
    /// Configs, logs and stores.
    pub dir: tempfile::TempDir,
}

/// Starts `test-small.toml` without its partner site (four servers: the edge
/// leaf and the 3-node facility cluster holding the R3 facility stream): the
/// edge leaf in one namespace behind `edge_link` and `delay`, the facility
/// cluster in another.
/// Waits until the leaf link is up and the streams exist.
pub async fn start_leaf_over_wan(
    lab: &mut Lab,
    edge_link: LinkShape,
    delay: Delay,
    edit: impl FnOnce(&mut Topology),
) -> LeafOverWan {
    let edge = lab.add_site("edge", edge_link).expect("edge site");
    let facility = lab
        .add_site("fac", LinkShape::clean())
        .expect("facility site");
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nats/topologies/test-small.toml");
    let mut topology = Topology::load(file).expect("topology loads");
    topology
        .sites
        .retain(|s| s.name == EDGE || s.name == FACILITY);
    for stream in topology.streams.iter_mut() {
        stream.partners.clear();
    }
    for site in topology.sites.iter_mut() {
        if site.name == EDGE {
            site.host = Some(edge.addr.to_string());
        } else {
            site.host = Some(facility.addr.to_string());
        }
    }
    edit(&mut topology);
    let mut plan = topology
        .plan(PortMode::FreeWhereMissing)
        .expect("topology plans");
    let hub: SocketAddr = plan.hub_leafnode_addrs(EDGE)[0]
        .parse()
        .expect("hub leaf node address");
    let relay = DelayRelay::start(edge.router.into(), hub, delay)
        .await
        .expect("relay listens");
    plan.set_leaf_remotes(EDGE, vec![relay.url("nats-leaf")]);
    let dir = tempfile::Builder::new()
        .prefix("lclstream-wan-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().to_path_buf();
    let (edge_launcher, facility_launcher) = (edge.launcher(), facility.launcher());
    let running = tokio::task::spawn_blocking(move || {
        RunningTopology::start_plan_launched(plan, &path, |server| {
            if server.site == EDGE {
                edge_launcher.clone()
            } else {
                facility_launcher.clone()
            }
        })
    })
    .await
    .unwrap()
    .expect("servers start in their namespaces");
    if let Err(e) = running.wait_ready(Duration::from_secs(30)).await {
        let logs: Vec<String> = running
            .servers()
            .map(|(p, s)| format!("{}:\n{}", p.name, s.log_tail(15)))
            .collect();
        panic!(
            "the leaf node link does not come up across the WAN: {e}\n{}",
            logs.join("\n")
        );
    }
    running
        .create_streams(Duration::from_secs(30))
        .await
        .expect("streams created");
    LeafOverWan {
        edge,
        facility,
        relay,
        running,
        dir,
    }
}
