//! The viewer in partner mode shows the gateway's refusal, never data, to
//! an institution with no grant at all: one whose only grant has expired,
//! and one the gateway has no policy for. Events are stored in the stream
//! meanwhile, so a viewer that read around the gateway would show them.

mod partner_support;

use std::time::{Duration, Instant};

use lclstream_gateway::policy::Quotas;
use lclstream_nats::server::http_get;
use lclstream_partner::{PartnerClient, PartnerConfig};
use lclstream_viewer::Viewer;
use partner_support::*;
use time::OffsetDateTime;

/// The viewer's status as the page polls it.
async fn status(addr: std::net::SocketAddr) -> serde_json::Value {
    let (code, body) =
        tokio::task::spawn_blocking(move || http_get(addr, "/api/status", Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("the viewer answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status is JSON")
}

/// Starts a partner viewer for `institution` and returns the error it shows
/// once the gateway answered, after checking that no event reached the page.
async fn refusal_shown(url: &str, institution: &str) -> String {
    let partner = step(
        "partner connect",
        PartnerClient::connect(&PartnerConfig {
            url: url.to_string(),
            institution: institution.to_string(),
            seed: None,
        }),
    )
    .await
    .expect("connects (no callout in this set-up)");
    let viewer = Viewer::start_partner(
        partner,
        "127.0.0.1:0".parse().unwrap(),
        "lcls.mfx.mfxp1234.>",
        None,
    )
    .await
    .expect("viewer starts");
    let addr = viewer.addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let status = status(addr).await;
        if let Some(error) = status["error"].as_str() {
            break (status.clone(), error.to_string());
        }
        assert!(
            Instant::now() < deadline,
            "{institution}: the viewer shows no refusal: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, error) = shown;
    // Data keeps arriving in the stream; give a viewer that leaked it time to show it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = self::status(addr).await;
    for s in [&status, &later] {
        assert_eq!(s["events"].as_u64(), Some(0), "{institution}: {s}");
        assert_eq!(
            s["frame_seq"].as_u64().unwrap_or(0),
            0,
            "{institution}: {s}"
        );
    }
    let (code, _) =
        tokio::task::spawn_blocking(move || http_get(addr, "/api/frame", Duration::from_secs(5)))
            .await
            .unwrap()
            .unwrap();
    assert_ne!(code, 200, "{institution}: no frame is served");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn institutions_without_a_grant_see_the_refusal_and_no_data() {
    let mut expired = policy("ucsd", &["lcls.mfx.mfxp1234.>"], Quotas::default());
    let now = OffsetDateTime::now_utc();
    expired.grants[0].not_before = Some(now - time::Duration::days(30));
    expired.grants[0].not_after = Some(now - time::Duration::days(1));
    let setup = setup(&[expired]).await;
    publish(&setup.js, "mfxp1234", 1, 4, 4, 64).await;
    let publisher = {
        let js = setup.js.clone();
        tokio::spawn(async move {
            for run in 2..40 {
                publish(&js, "mfxp1234", run, 1, 2, 64).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let error = refusal_shown(&setup.server.url(), "ucsd").await;
    assert!(
        error.contains("the gateway refused: no_grant") && error.contains("not valid now"),
        "an expired grant is named as the reason: {error}"
    );
    let error = refusal_shown(&setup.server.url(), "stranger").await;
    assert!(
        error.contains("the gateway refused: unknown_institution"),
        "an institution without a policy is named as the reason: {error}"
    );
    publisher.abort();
    // Neither institution got a consumer on the stream.
    let stream = setup.js.get_stream("LCLS_MFX").await.unwrap();
    let mut names = stream.consumer_names();
    let mut consumers = Vec::new();
    while let Some(Ok(name)) = futures::StreamExt::next(&mut names).await {
        consumers.push(name);
    }
    // (The gateway's meter reads the stream with an unnamed consumer of its own.)
    consumers.retain(|name| name.starts_with("ucsd") || name.starts_with("stranger"));
    assert!(consumers.is_empty(), "{consumers:?}");
}
