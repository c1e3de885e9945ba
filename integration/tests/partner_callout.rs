//! The whole chain with the auth callout: a gateway started with `[auth]`
//! authorizes an institution's nkey, the institution requests a dataset and
//! pulls it with the permissions the callout issued, and the audit log holds
//! the connection decision next to the request decision.

mod partner_support;

use std::time::Duration;

use async_nats::jetstream;
use lclstream_gateway::auth::{callout_server_blocks, CalloutServerSettings};
use lclstream_gateway::gateway::Gateway;
use lclstream_gateway::keys::GatewayKeys;
use lclstream_nats::server::NatsServer;
use partner_support::*;

#[tokio::test]
async fn institution_authorized_by_the_callout_requests_and_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let gateway_keys = GatewayKeys::load_or_generate(&keys_dir, true).expect("gateway keys");
    let admin = nkeys::KeyPair::new_user();
    let mut settings = CalloutServerSettings::from_keys(&gateway_keys);
    settings.admin_users.push(admin.public_key());
    let server = NatsServer::start_with(|c| c.blocks.extend(callout_server_blocks(&settings)))
        .expect("nats-server starts with the callout");

    let mut ucsd = policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas());
    let ucsd_key = add_new_key(&mut ucsd);
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    write_policies(&policies, &[ucsd]);
    let mut config = callout_config(&server.url(), &policies, &keys_dir);
    if let Some(auth) = config.auth.as_mut() {
        auth.admin_keys.push(admin.public_key());
    }
    config.audit.file = Some(dir.path().join("audit.jsonl"));
    let gateway = step("gateway", Gateway::start(config))
        .await
        .expect("gateway starts with the callout");

    // Data published in the facility account (as an administrator here).
    let facility = async_nats::ConnectOptions::with_nkey(admin.seed().unwrap())
        .connect(server.url())
        .await
        .unwrap();
    publish(&jetstream::new(facility), "mfxp1234", 6, 5, 3, 16).await;

    let partner = connect_with_key(&server.url(), "ucsd", &ucsd_key)
        .await
        .expect("the callout authorizes the institution's key");
    let (summary, indices) = request_and_pull(
        &partner,
        "lcls.mfx.mfxp1234.>",
        "callout",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(summary.events, 15);
    assert_eq!(indices, (0..15).collect::<Vec<u64>>());

    // A key the policies do not know is refused at connect time.
    let stranger = connect_with_key(&server.url(), "ucsd", &nkeys::KeyPair::new_user()).await;
    let refused = stranger
        .err()
        .expect("an unknown key must not connect")
        .to_string();
    assert!(
        refused.contains("authorization violation") && refused.contains("check the seed file"),
        "the refusal says what to check: {refused}"
    );

    gateway.shutdown().await;
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["action"] == "connect"
        && l["decision"] == "allow"
        && l["who"] == ucsd_key.public_key().as_str()
        && l["institution"] == "ucsd"));
    assert!(lines
        .iter()
        .any(|l| l["action"] == "connect" && l["decision"] == "deny"));
    assert!(lines.iter().any(|l| l["action"] == "request"
        && l["decision"] == "allow"
        && l["institution"] == "ucsd"));
}
