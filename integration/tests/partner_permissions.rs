//! The partner client works with exactly the permissions the auth side grants
//! an institution (`auth::permissions::institution_permissions`), given here
//! as a static nkey user: request a dataset, look the consumer up, pull, ack.
//! What lies outside them (stream info, another institution's requests) fails.

mod partner_support;

use std::time::Duration;

use async_nats::jetstream;
use lclstream_gateway::auth::permissions::institution_permissions;
use lclstream_gateway::gateway::{Gateway, GatewayConfig};
use lclstream_gateway::policy::Quotas;
use lclstream_nats::server::{quote, NatsServer};
use lclstream_partner::{PartnerClient, PartnerConfig};
use partner_support::*;

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| quote(s))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn partner_needs_only_the_institution_permissions() {
    let key = nkeys::KeyPair::new_user();
    let quotas = Quotas {
        concurrent_consumers: 2,
        ..quick_quotas()
    };
    let permissions = institution_permissions("ucsd", quotas.concurrent_consumers);
    let block = format!(
        "authorization {{\n  users = [\n    {{ user: \"gateway\", password: \"gateway-secret\" }},\n    \
         {{ nkey: {}, permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }} }} }}\n  ]\n}}\n",
        quote(&key.public_key()),
        list(&permissions.publish.allow),
        list(&permissions.subscribe.allow),
    );
    let server =
        NatsServer::start_with(|c| c.blocks.push(block.clone())).expect("nats-server starts");
    let url = server.url();

    let dir = tempfile::tempdir().unwrap();
    write_policies(
        dir.path(),
        &[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quotas)],
    );
    let mut config = GatewayConfig::local(&url, dir.path());
    config.nats.user = Some("gateway".into());
    config.nats.password = Some("gateway-secret".into());
    let gateway = step("gateway", Gateway::start(config))
        .await
        .expect("gateway starts");

    let admin = async_nats::ConnectOptions::with_user_and_password(
        "gateway".into(),
        "gateway-secret".into(),
    )
    .connect(&url)
    .await
    .unwrap();
    let js = jetstream::new(admin);
    publish(&js, "mfxp1234", 1, 8, 2, 16).await;

    let ucsd = step(
        "partner connect",
        PartnerClient::connect(&PartnerConfig {
            url: url.clone(),
            institution: "ucsd".into(),
            seed: Some(key.seed().unwrap()),
        }),
    )
    .await
    .expect("the institution connects with its nkey");
    let (summary, indices) =
        request_and_pull(&ucsd, "lcls.mfx.mfxp1234.>", "perm", Duration::from_secs(3)).await;
    assert_eq!(summary.events, 16);
    assert_eq!(indices, (0..16).collect::<Vec<u64>>());
    step("usage", ucsd.usage()).await.expect("usage is allowed");

    // Outside the grant: stream info and another institution's request subject.
    let partner_js = jetstream::new(ucsd.client().clone());
    let info =
        tokio::time::timeout(Duration::from_secs(2), partner_js.get_stream("LCLS_MFX")).await;
    assert!(!matches!(info, Ok(Ok(_))), "stream info must be refused");
    let other = tokio::time::timeout(
        Duration::from_secs(2),
        ucsd.client()
            .request("lclstream.gateway.slac.list", "{}".into()),
    )
    .await;
    assert!(
        !matches!(other, Ok(Ok(_))),
        "another institution's subject must be refused"
    );
    gateway.shutdown().await;
}
