//! The gateway's data-request service against a real nats-server: grants,
//! resume by label, release, listing, usage, every quota kind enforced with
//! its documented code, and malformed requests refused without effect.

mod partner_support;

use std::time::Duration;

use lclstream_gateway::policy::Quotas;
use lclstream_gateway::service::protocol::{DatasetGrant, ErrorCode, Reply};
use lclstream_partner::{DatasetRequest, PartnerError, PullOptions, ReleaseRequest, Start};
use partner_support::*;

fn dataset(filters: &[&str], label: Option<&str>) -> DatasetRequest {
    DatasetRequest {
        filters: filters.iter().map(|s| s.to_string()).collect(),
        start: Start::All,
        end: None,
        label: label.map(str::to_string),
    }
}

fn refused_code(result: Result<impl std::fmt::Debug, PartnerError>) -> ErrorCode {
    match result {
        Err(PartnerError::Refused(body)) => {
            assert!(!body.reason.is_empty(), "a refusal explains itself");
            body.code
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn service_is_discoverable_grants_resumes_and_releases() {
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], Quotas::default())]).await;
    publish(&s.js, "mfxp1234", 7, 3, 2, 16).await;
    publish(&s.js, "mfxp9999", 1, 1, 2, 16).await; // not granted to ucsd

    // Discoverable through the standard service API.
    let info = step(
        "$SRV.INFO",
        s.admin.request("$SRV.INFO.lclstream-gateway", "".into()),
    )
    .await
    .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["name"], "lclstream-gateway");
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    for verb in ["request", "list", "usage", "release"] {
        assert!(
            subjects.contains(&format!("lclstream.gateway.*.{verb}").as_str()),
            "{subjects:?}"
        );
    }

    let ucsd = partner(&s.server.url(), "ucsd").await;
    let list = step("list", ucsd.list()).await.unwrap();
    assert_eq!(list.grants.len(), 1);
    assert!(list.grants[0].active && list.grants[0].stream_exists);
    assert_eq!(
        list.grants[0].stored.len(),
        1,
        "only granted subjects are shown"
    );
    assert_eq!(
        list.grants[0].stored[0].subject,
        "lcls.mfx.mfxp1234.7.jungfrau"
    );
    assert_eq!(list.grants[0].stored[0].messages, 3);

    let grant = step(
        "request",
        ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], Some("run7"))),
    )
    .await
    .unwrap();
    assert_eq!(grant.consumer, "ucsd-c0");
    assert_eq!(grant.stream, "LCLS_MFX");
    assert!(!grant.resumed);
    assert_eq!(grant.num_pending, 3);
    assert_eq!(grant.pull.max_batch, Quotas::default().pull.max_batch);
    assert_eq!(grant.notices, "_INBOX.ucsd.notices");
    let info =
        s.js.get_stream("LCLS_MFX")
            .await
            .unwrap()
            .consumer_info("ucsd-c0")
            .await
            .unwrap();
    assert_eq!(info.config.filter_subject, "lcls.mfx.mfxp1234.>");
    assert_eq!(
        info.config.max_ack_pending,
        Quotas::default().pull.max_ack_pending
    );

    // Same label: the same consumer comes back, nothing new is created or counted.
    let again = step(
        "re-request",
        ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], Some("run7"))),
    )
    .await
    .unwrap();
    assert_eq!(again.consumer, "ucsd-c0");
    assert!(again.resumed);
    // Same label, other filters: refused rather than silently returning other data.
    let clash = ucsd
        .request_dataset(&dataset(&["lcls.mfx.mfxp1234.7.jungfrau"], Some("run7")))
        .await;
    assert_eq!(refused_code(clash), ErrorCode::BadRequest);

    let usage = step("usage", ucsd.usage()).await.unwrap();
    assert_eq!(usage.requests.used, 1);
    assert_eq!(usage.consumers.used, 1);
    assert_eq!(usage.consumer_list[0].label.as_deref(), Some("run7"));
    assert_eq!(usage.consumer_list[0].num_pending, 3);

    let released = step(
        "release",
        ucsd.release(&ReleaseRequest {
            consumer: None,
            label: Some("run7".into()),
        }),
    )
    .await
    .unwrap();
    assert_eq!(released.consumer, "ucsd-c0");
    assert!(slot_consumers(&s.js, "ucsd").await.is_empty());
    // Another institution's consumer name cannot be released.
    let other = ucsd
        .release(&ReleaseRequest {
            consumer: Some("other-c0".into()),
            label: None,
        })
        .await;
    assert_eq!(refused_code(other), ErrorCode::BadRequest);

    // Every decision is in the audit log.
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["action"] == "request"
        && l["decision"] == "allow"
        && l["details"]["consumer"] == "ucsd-c0"
        && l["institution"] == "ucsd"));
    assert!(lines.iter().any(|l| l["action"] == "request"
        && l["decision"] == "deny"
        && l["reason"] == "bad_request"));
    assert!(lines
        .iter()
        .any(|l| l["action"] == "release" && l["decision"] == "allow"));
}

#[tokio::test]
async fn malformed_and_escaping_requests_change_nothing() {
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], Quotas::default())]).await;
    publish(&s.js, "mfxp1234", 1, 1, 1, 8).await;
    let ucsd = partner(&s.server.url(), "ucsd").await;
    let huge_filter = format!("lcls.mfx.mfxp1234.{}", "x".repeat(300));
    let too_many: Vec<String> = (0..17)
        .map(|i| format!("lcls.mfx.mfxp1234.{i}.d"))
        .collect();
    let cases: Vec<(String, ErrorCode)> = vec![
        ("not json".into(), ErrorCode::BadRequest),
        ("".into(), ErrorCode::BadRequest),
        (
            r#"{"filters":["lcls.mfx.mfxp1234.>"],"bogus":1}"#.into(),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp1234.>"],"start":{"sequence":18446744073709551615}}"#
                .into(),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp1234.>"],"start":{"sequence":1e40}}"#.into(),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp1234.>"],"start":{"sequence":0}}"#.into(),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp1234.>"],"start":{"sequence":-3}}"#.into(),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp1234.>"],"start":{"sequence":9},"end":{"sequence":3}}"#
                .into(),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp1234.>"],"start":{"time":"1969-12-31T00:00:00Z"}}"#.into(),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp1234.>"],"label":"../etc"}"#.into(),
            ErrorCode::BadRequest,
        ),
        (r#"{"filters":[]}"#.into(), ErrorCode::BadRequest),
        (
            format!(r#"{{"filters":["{huge_filter}"]}}"#),
            ErrorCode::BadRequest,
        ),
        (
            serde_json::json!({ "filters": too_many }).to_string(),
            ErrorCode::BadRequest,
        ),
        (
            format!(
                r#"{{"filters":["lcls.mfx.mfxp1234.>"],"label":"{}"}}"#,
                "y".repeat(20_000)
            ),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp1234.>","lcls.mfx.mfxp1234.1.jungfrau"]}"#.into(),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp1234.1 .x"]}"#.into(),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp1234.>.x"]}"#.into(),
            ErrorCode::BadRequest,
        ),
        // Wildcards and neighbours that would reach outside the grant.
        (r#"{"filters":["lcls.mfx.>"]}"#.into(), ErrorCode::NoGrant),
        (r#"{"filters":["lcls.>"]}"#.into(), ErrorCode::NoGrant),
        (r#"{"filters":[">"]}"#.into(), ErrorCode::NoGrant),
        (
            r#"{"filters":["lcls.mfx.*.1.jungfrau"]}"#.into(),
            ErrorCode::NoGrant,
        ),
        (
            r#"{"filters":["lcls.*.mfxp1234.>"]}"#.into(),
            ErrorCode::NoGrant,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp12345.>"]}"#.into(),
            ErrorCode::NoGrant,
        ),
        (
            r#"{"filters":["lcls.mfx.mfxp1234"]}"#.into(),
            ErrorCode::NoGrant,
        ),
    ];
    for (body, expected) in &cases {
        let result: Result<DatasetGrant, PartnerError> = step(
            "raw request",
            ucsd.call_raw("request", body.clone().into_bytes()),
        )
        .await;
        assert_eq!(
            refused_code(result),
            *expected,
            "body {}",
            &body[..body.len().min(80)]
        );
    }
    // An institution without a policy, whatever it sends.
    let stranger = partner(&s.server.url(), "nobody").await;
    let result = stranger
        .request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], None))
        .await;
    assert_eq!(refused_code(result), ErrorCode::UnknownInstitution);
    // The list and usage verbs refuse unknown fields too.
    let result: Result<serde_json::Value, PartnerError> =
        ucsd.call_raw("usage", br#"{"all":true}"#.to_vec()).await;
    assert_eq!(refused_code(result), ErrorCode::BadRequest);
    // Replies carry the standard service error headers as well.
    let reply = step(
        "raw",
        ucsd.client()
            .request("lclstream.gateway.ucsd.request", "nope".into()),
    )
    .await
    .unwrap();
    let headers = reply.headers.expect("error headers");
    assert_eq!(
        headers.get("Nats-Service-Error-Code").unwrap().as_str(),
        "400"
    );
    let body: Reply<serde_json::Value> = serde_json::from_slice(&reply.payload).unwrap();
    assert!(matches!(body, Reply::Error { .. }));

    // Nothing changed: no consumer, nothing counted.
    assert!(slot_consumers(&s.js, "ucsd").await.is_empty());
    let usage = step("usage", ucsd.usage()).await.unwrap();
    assert_eq!(usage.requests.used, 0);
    assert_eq!(usage.consumers.used, 0);
    // And a good request still works afterwards.
    let grant = step(
        "request",
        ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp1234.1.jungfrau"], None)),
    )
    .await
    .unwrap();
    assert_eq!(grant.consumer, "ucsd-c0");
}

#[tokio::test]
async fn request_quota_counts_a_rolling_hour() {
    let quotas = Quotas {
        requests_per_hour: 2,
        ..Quotas::default()
    };
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quotas)]).await;
    publish(&s.js, "mfxp1234", 1, 1, 1, 8).await;
    let ucsd = partner(&s.server.url(), "ucsd").await;
    for label in ["a", "b"] {
        step(
            "request",
            ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], Some(label))),
        )
        .await
        .unwrap();
    }
    let third = ucsd
        .request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], Some("c")))
        .await;
    assert_eq!(refused_code(third), ErrorCode::QuotaRequests);
    assert_eq!(
        slot_consumers(&s.js, "ucsd").await,
        vec!["ucsd-c0", "ucsd-c1"]
    );
    // Resuming an existing dataset is not a new request.
    let resumed = step(
        "resume",
        ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], Some("a"))),
    )
    .await
    .unwrap();
    assert!(resumed.resumed);
    let usage = step("usage", ucsd.usage()).await.unwrap();
    assert_eq!((usage.requests.used, usage.requests.remaining), (2, 0));
    assert!(usage.requests.resets_at.is_some());
    // An hour later the window has room again.
    s.clock.advance(Duration::from_secs(3601));
    let later = step(
        "request",
        ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], Some("c"))),
    )
    .await
    .unwrap();
    assert_eq!(later.consumer, "ucsd-c2");
}

#[tokio::test]
async fn consumer_quota_is_the_number_of_slots() {
    let quotas = Quotas {
        concurrent_consumers: 2,
        ..Quotas::default()
    };
    let s = setup(&[
        policy("ucsd", &["lcls.mfx.mfxp1234.>"], quotas.clone()),
        policy("slac", &["lcls.mfx.mfxp1234.>"], quotas),
    ])
    .await;
    publish(&s.js, "mfxp1234", 1, 1, 1, 8).await;
    let ucsd = partner(&s.server.url(), "ucsd").await;
    let slac = partner(&s.server.url(), "slac").await;
    let a = step(
        "a",
        ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], None)),
    )
    .await
    .unwrap();
    let b = step(
        "b",
        ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], None)),
    )
    .await
    .unwrap();
    assert_eq!(
        (a.consumer.as_str(), b.consumer.as_str()),
        ("ucsd-c0", "ucsd-c1")
    );
    let c = ucsd
        .request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], None))
        .await;
    assert_eq!(refused_code(c), ErrorCode::QuotaConsumers);
    // Slots are per institution.
    let other = step(
        "slac",
        slac.request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], None)),
    )
    .await
    .unwrap();
    assert_eq!(other.consumer, "slac-c0");
    // Releasing frees the slot for the next request.
    step(
        "release",
        ucsd.release(&ReleaseRequest {
            consumer: Some("ucsd-c0".into()),
            label: None,
        }),
    )
    .await
    .unwrap();
    let d = step(
        "d",
        ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], None)),
    )
    .await
    .unwrap();
    assert_eq!(d.consumer, "ucsd-c0");
    assert_eq!(slot_consumers(&s.js, "ucsd").await.len(), 2);
}

#[tokio::test]
async fn bytes_quota_pauses_consumers_until_the_next_day() {
    // 20 batches of 2 events (frames 64x64): roughly 10 KB per message once compressed.
    let quotas = Quotas {
        bytes_per_day: 30_000,
        ..quick_quotas()
    };
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quotas)]).await;
    let messages = publish(&s.js, "mfxp1234", 3, 20, 2, 64).await;
    let stored =
        s.js.get_stream("LCLS_MFX")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .bytes;
    assert!(
        stored > 60_000,
        "the dataset ({stored} bytes) is well above the quota"
    );

    let ucsd = partner(&s.server.url(), "ucsd").await;
    let mut notices = step("notices", ucsd.notices()).await.unwrap();
    let grant = step(
        "request",
        ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], Some("r3"))),
    )
    .await
    .unwrap();
    // Wait until the meter has indexed the stream, so metering is exact.
    for _ in 0..200 {
        s.gateway.meter_tick().await.unwrap();
        if s.gateway.indexed_high("LCLS_MFX") >= messages as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.gateway.indexed_high("LCLS_MFX"), messages as u64);

    // Pull part of the dataset: more than the quota.
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let collector = |into: std::sync::Arc<std::sync::Mutex<Vec<u64>>>| {
        lclstream_partner::CallbackSink::new(
            move |_b: &lclstream_partner::BatchInfo, e: lclstream_nats::wire::Event| {
                into.lock().unwrap().push(e.index);
                Ok(())
            },
        )
    };
    let mut sink = collector(got.clone());
    let options = PullOptions {
        max_events: Some(16),
        batch_messages: 2,
        idle_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let first = step("pull", ucsd.pull(&grant, &options, &mut sink))
        .await
        .unwrap();
    assert_eq!(first.events, 16);

    let report = s.gateway.meter_tick().await.unwrap();
    let metered = report.metered.get("ucsd").copied().unwrap_or(0);
    assert!(
        metered >= 30_000,
        "metered {metered} bytes for 8 delivered messages"
    );
    assert_eq!(report.paused, vec!["ucsd-c0".to_string()]);
    let info =
        s.js.get_stream("LCLS_MFX")
            .await
            .unwrap()
            .consumer_info("ucsd-c0")
            .await
            .unwrap();
    assert!(info.paused, "the server holds the consumer paused");

    // The institution is told, on its notice subject and in its replies.
    let notice = step("notice", notices.next()).await.expect("a notice");
    assert_eq!(notice.code, "quota_bytes");
    assert_eq!(notice.consumers, vec!["ucsd-c0".to_string()]);
    let refused = ucsd
        .request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], Some("r3")))
        .await;
    assert_eq!(refused_code(refused), ErrorCode::QuotaBytes);
    let refused = ucsd
        .request_dataset(&dataset(&["lcls.mfx.mfxp1234.3.jungfrau"], None))
        .await;
    assert_eq!(refused_code(refused), ErrorCode::QuotaBytes);
    let usage = step("usage", ucsd.usage()).await.unwrap();
    assert!(usage.paused);
    assert_eq!(usage.bytes.remaining, 0);
    assert!(usage.consumer_list[0].paused);

    // Enforced: a paused consumer delivers nothing.
    let more = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut sink = collector(more.clone());
    let idle = PullOptions {
        idle_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let during = step("pull while paused", ucsd.pull(&grant, &idle, &mut sink))
        .await
        .unwrap();
    assert_eq!(during.events, 0, "nothing is delivered while paused");

    // The next UTC day: the gateway resumes the consumer and the rest arrives.
    s.clock.advance(Duration::from_secs(24 * 3600));
    let report = s.gateway.meter_tick().await.unwrap();
    assert_eq!(report.resumed, vec!["ucsd-c0".to_string()]);
    let notice = step("notice", notices.next()).await.expect("a notice");
    assert_eq!(notice.code, "resumed");
    let rest = step("pull after reset", ucsd.pull(&grant, &idle, &mut sink))
        .await
        .unwrap();
    assert_eq!(rest.events, 40 - 16);
    let mut got = got.lock().unwrap().clone();
    got.extend(more.lock().unwrap().iter());
    got.sort();
    assert_eq!(got, (0..40).collect::<Vec<u64>>(), "every event once");
}

#[tokio::test]
async fn gateway_command_serves_requests_until_terminated() {
    use std::process::{Command, Stdio};
    let server = lclstream_nats::server::NatsServer::start_default().expect("nats-server starts");
    let dir = tempfile::tempdir().unwrap();
    write_policies(
        dir.path(),
        &[policy("ucsd", &["lcls.mfx.mfxp1234.>"], Quotas::default())],
    );
    let audit = dir.path().join("audit.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["gateway", "--nats-url", &server.url(), "--policies"])
        .arg(dir.path())
        .arg("--audit-file")
        .arg(&audit)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lclstream gateway starts");
    let ucsd = partner(&server.url(), "ucsd").await;
    // The process needs a moment to connect: retry the first request, bounded.
    let mut usage = None;
    for _ in 0..100 {
        match tokio::time::timeout(Duration::from_secs(1), ucsd.usage()).await {
            Ok(Ok(u)) => {
                usage = Some(u);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "lclstream gateway exited"
        );
    }
    let usage = usage.expect("the gateway process answers");
    assert_eq!(usage.institution, "ucsd");
    assert_eq!(
        usage.consumers.limit,
        Quotas::default().concurrent_consumers as u64
    );
    // SIGTERM stops it cleanly.
    nix_kill(child.id(), "TERM");
    let deadline = std::time::Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(text.lines().any(|l| l.contains("\"action\":\"usage\"")));
}

/// Sends a signal by name with the `kill` command (keeps this test free of extra crates).
fn nix_kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn consumers_outside_a_withdrawn_grant_are_deleted() {
    let s = setup(&[policy(
        "ucsd",
        &["lcls.mfx.mfxp1234.>", "lcls.mfx.mfxp5678.>"],
        Quotas::default(),
    )])
    .await;
    publish(&s.js, "mfxp1234", 1, 2, 1, 8).await;
    publish(&s.js, "mfxp5678", 1, 2, 1, 8).await;
    let ucsd = partner(&s.server.url(), "ucsd").await;
    let mut notices = step("notices", ucsd.notices()).await.unwrap();
    let keep = step(
        "a",
        ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp1234.>"], Some("keep"))),
    )
    .await
    .unwrap();
    let lose = step(
        "b",
        ucsd.request_dataset(&dataset(&["lcls.mfx.mfxp5678.>"], Some("lose"))),
    )
    .await
    .unwrap();
    let report = s.gateway.meter_tick().await.unwrap();
    assert!(report.withdrawn.is_empty(), "both are granted");

    // The facility withdraws the second experiment.
    let policy_dir = s.dir.path().join("policies");
    write_policies(
        &policy_dir,
        &[policy("ucsd", &["lcls.mfx.mfxp1234.>"], Quotas::default())],
    );
    assert_eq!(s.gateway.reload_policies().unwrap(), 1);
    let report = s.gateway.meter_tick().await.unwrap();
    assert_eq!(report.withdrawn, vec![lose.consumer.clone()]);
    assert_eq!(
        slot_consumers(&s.js, "ucsd").await,
        vec![keep.consumer.clone()]
    );
    let notice = step("notice", notices.next()).await.expect("a notice");
    assert_eq!(notice.code, "grant_withdrawn");
    assert_eq!(notice.consumers, vec![lose.consumer]);
    // And it cannot be requested again.
    let again = ucsd
        .request_dataset(&dataset(&["lcls.mfx.mfxp5678.>"], Some("lose")))
        .await;
    assert_eq!(refused_code(again), ErrorCode::NoGrant);
}
