//! The gateway's auth callout in a multi-site topology (edge leaf, 3-node
//! facility cluster, 1-node partner cluster).
//!
//! Every facility and partner server renders the gateway's callout blocks
//! (same accounts, same issuer, same callout account); the gateway service
//! connects to the partner site. Edge leaf links do not go through the
//! callout: the hub's leaf listener takes a user bound to the data account.
//! A partner institution with a real nkey is authorized by the callout, asks
//! the gateway for a dataset on its site's mirror and pulls every event once;
//! an unknown key is refused. The callout also answers for a facility server:
//! its authorization request crosses the NATS gateways to the gateway service.

mod partner_support;
mod topology_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lclstream_gateway::auth::{
    callout_server_blocks, consumer_slot_name, CalloutServerSettings, FACILITY_ACCOUNT,
};
use lclstream_gateway::gateway::Gateway;
use lclstream_gateway::keys::GatewayKeys;
use lclstream_nats::server::quote;
use lclstream_nats::topology::run::ConnectFn;
use lclstream_nats::topology::{partner_stream_name, PortMode, Topology};
use lclstream_partner::{
    BatchInfo, CallbackSink, DatasetRequest, PartnerClient, PartnerConfig, PullOptions, Start,
};
use partner_support::{add_new_key, callout_config, policy, quick_quotas, step, write_policies};
use topology_support::*;

/// Leaf link user at the hub (leaf links are not covered by the callout).
const LEAF_USER: &str = "edge";
const LEAF_PASSWORD: &str = "edge-secret";

/// The edge's own accounts: the data account (publishers on the DAQ network
/// land in it without credentials, the facility administrator manages its
/// stream) and a system account. The edge is its own JetStream domain and
/// carries no callout.
fn edge_accounts(admin_user: &str) -> String {
    format!(
        "accounts {{\n  {FACILITY_ACCOUNT} {{\n    jetstream: enabled\n    users: [ \
         {{ user: \"daq\", password: \"daq\" }}, {{ nkey: {} }} ]\n  }}\n  \
         SYS {{\n    users: [ {{ user: \"edge-system\", password: \"edge-system\" }} ]\n  }}\n}}\n\
         system_account: SYS\nno_auth_user: \"daq\"\n",
        quote(admin_user)
    )
}

/// Connects `key` as institution `id` to `url`, bounded.
async fn connect_partner(
    url: &str,
    id: &str,
    key: &nkeys::KeyPair,
) -> anyhow::Result<PartnerClient> {
    let config = PartnerConfig {
        url: url.to_string(),
        institution: id.to_string(),
        seed: Some(key.seed().unwrap()),
    };
    match tokio::time::timeout(Duration::from_secs(20), PartnerClient::connect(&config)).await {
        Ok(result) => result.map_err(|e| anyhow::anyhow!("{e}")),
        Err(_) => Err(anyhow::anyhow!("connect to {url} timed out")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_authorized_by_the_callout_pulls_its_sites_mirror() {
    let _serial = serial().await;
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let keys_dir = work.path().join("keys");
    let keys = GatewayKeys::load_or_generate(&keys_dir, true).expect("gateway keys");
    // Streams, sources and mirrors are set up by a facility administrator: a
    // static user of the facility account on every site.
    let admin = nkeys::KeyPair::new_user();
    let mut settings = CalloutServerSettings::from_keys(&keys);
    settings.admin_users.push(admin.public_key());

    let mut topology = Topology::load(topology_file("test-small.toml")).unwrap();
    // Every server where institutions may connect carries the same callout
    // blocks: accounts must match across the supercluster's NATS gateways.
    topology.add_blocks(Some("facility"), callout_server_blocks(&settings));
    topology.add_blocks(Some(PARTNER), callout_server_blocks(&settings));
    topology.add_blocks(Some(EDGE), vec![edge_accounts(&admin.public_key())]);
    topology.auth.leaf_account = Some(FACILITY_ACCOUNT.to_string());
    topology.auth.leafnode_authorization = Some(format!(
        "users = [ {{ user: {}, password: {}, account: {} }} ]",
        quote(LEAF_USER),
        quote(LEAF_PASSWORD),
        quote(FACILITY_ACCOUNT)
    ));
    let mut plan = topology.plan(PortMode::FreeWhereMissing).unwrap();
    let remotes = plan
        .hub_leafnode_addrs(EDGE)
        .into_iter()
        .map(|addr| format!("nats-leaf://{LEAF_USER}:{LEAF_PASSWORD}@{addr}"))
        .collect();
    plan.set_leaf_remotes(EDGE, remotes);
    let admin_seed = admin.seed().unwrap();
    let connect: ConnectFn =
        Arc::new(move || async_nats::ConnectOptions::with_nkey(admin_seed.clone()));
    let deployment = start_plan_with(plan, Some(connect)).await;
    let partner_url = deployment.running.partner_urls(Some(PARTNER)).unwrap()[0].clone();
    let facility_url = deployment.running.facility_urls()[0].clone();

    // Policies: the institution reads its site's mirror.
    let mut ucsd = policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas());
    ucsd.grants[0].stream = partner_stream_name(INSTRUMENT, PARTNER);
    let ucsd_key = add_new_key(&mut ucsd);
    let policies = work.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    write_policies(&policies, &[ucsd]);
    let mut config = callout_config(&partner_url, &policies, &keys_dir);
    if let Some(auth) = config.auth.as_mut() {
        auth.admin_keys.push(admin.public_key());
    }
    config.audit.file = Some(work.path().join("audit.jsonl"));
    let gateway = step("gateway start", Gateway::start(config))
        .await
        .expect("gateway starts at the partner site with the callout");

    // Data enters at the edge (no credentials on the DAQ network) and is
    // mirrored to the partner site through the facility.
    let n = 200;
    let publisher = Publisher::spawn(deployment.edge_url(), 0..n, PublishOptions::default());
    publisher.finish(Duration::from_secs(30)).await;
    wait_for(
        "every copy to hold every event",
        Duration::from_secs(30),
        || async { deployment.try_copy_counts().await == Some((n, n, n)) },
    )
    .await;
    let data_at = started.elapsed().as_secs_f64();

    let partner = connect_partner(&partner_url, "ucsd", &ucsd_key)
        .await
        .expect("the callout authorizes the institution's key at the partner site");
    let grant = step(
        "request",
        partner.request_dataset(&DatasetRequest {
            filters: vec!["lcls.mfx.mfxp1234.>".into()],
            start: Start::All,
            end: None,
            label: Some("topology".into()),
        }),
    )
    .await
    .expect("the gateway grants the dataset");
    assert_eq!(grant.stream, partner_stream_name(INSTRUMENT, PARTNER));
    let collected = Arc::new(Mutex::new(Vec::new()));
    let mut sink = {
        let collected = collected.clone();
        CallbackSink::new(move |_b: &BatchInfo, e: lclstream_nats::wire::Event| {
            collected.lock().unwrap().push(e.index);
            Ok(())
        })
    };
    let options = PullOptions {
        idle_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let summary = step("pull", partner.pull(&grant, &options, &mut sink))
        .await
        .expect("pulled from the partner mirror");
    assert_eq!(summary.events, n);
    let mut indices = collected.lock().unwrap().clone();
    indices.sort_unstable();
    assert_eq!(
        indices,
        (0..n).collect::<Vec<u64>>(),
        "every event exactly once"
    );
    let pulled_at = started.elapsed().as_secs_f64();
    // The institution's consumer lives on the mirror, in the partner cluster:
    // its pulls do not cross the WAN.
    let js = async_nats::jetstream::new(
        step("connect", deployment.running.connect(PARTNER))
            .await
            .unwrap(),
    );
    let mirror = step("mirror", js.get_stream(&grant.stream))
        .await
        .expect("mirror exists");
    let consumer_info = step(
        "consumer info",
        mirror.consumer_info(consumer_slot_name("ucsd", 0)),
    )
    .await
    .expect("the institution's consumer exists on the mirror");
    assert_eq!(
        consumer_info.cluster.and_then(|c| c.name).as_deref(),
        Some(PARTNER),
        "the consumer is placed in the partner cluster"
    );

    // A key the policies do not know is refused.
    let stranger = nkeys::KeyPair::new_user();
    assert!(
        connect_partner(&partner_url, "ucsd", &stranger)
            .await
            .is_err(),
        "an unknown key must not connect at the partner site"
    );
    // A facility server asks the same gateway service, across the NATS gateways.
    let at_facility = connect_partner(&facility_url, "ucsd", &ucsd_key).await;
    assert!(
        at_facility.is_ok(),
        "a facility server authorizes through the gateway at the partner site: {:?}",
        at_facility.err()
    );
    assert!(
        connect_partner(&facility_url, "ucsd", &stranger)
            .await
            .is_err(),
        "an unknown key must not connect at the facility"
    );

    gateway.shutdown().await;
    let audit = std::fs::read_to_string(work.path().join("audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let allowed_servers: std::collections::BTreeSet<String> = lines
        .iter()
        .filter(|l| {
            l["action"] == "connect"
                && l["decision"] == "allow"
                && l["who"] == ucsd_key.public_key().as_str()
        })
        .filter_map(|l| l["details"]["server_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        allowed_servers.len(),
        2,
        "allowed at a partner and a facility server: {audit}"
    );
    assert!(lines
        .iter()
        .any(|l| l["action"] == "connect" && l["decision"] == "deny"));
    assert!(lines.iter().any(|l| l["action"] == "request"
        && l["decision"] == "allow"
        && l["institution"] == "ucsd"));
    eprintln!(
        "callout topology: data mirrored at {data_at:.1} s, pulled at {pulled_at:.1} s, \
         total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
