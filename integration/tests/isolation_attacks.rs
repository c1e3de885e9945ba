//! Institution isolation under attack: a real deployment (nats-server with
//! the auth callout, the gateway with publish jobs, a job worker with an
//! agent key) with two institutions, `ucsd` (the attacker, experiment
//! mfxp1234) and `desy` (the victim, experiment mfxp9999, with a dataset
//! consumer and a publish job). Holding only ucsd's valid key, the attacker
//! tries every class of attack the security model in
//! `docs/gateway-protocol.md` rules out; each must fail, and the victim's
//! consumers, streams, inbox and job records must be as before.

mod jobs_support;
mod partner_support;

use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Client, ConnectOptions, Event, HeaderMap};
use futures::StreamExt;
use jobs_support::*;
use lclstream_gateway::auth::{callout_server_blocks, CalloutServerSettings};
use lclstream_gateway::gateway::{Gateway, GatewayHandle};
use lclstream_gateway::jobs::protocol::{JobList, JobListRequest, JobRef, JobState, VERB_LIST};
use lclstream_gateway::keys::GatewayKeys;
use lclstream_gateway::service::protocol::{DatasetGrant, ErrorCode};
use lclstream_nats::server::NatsServer;
use lclstream_partner::{PartnerClient, PartnerError};
use partner_support::*;
use tokio::sync::mpsc;

const QUIET: Duration = Duration::from_millis(1500);

struct Deployment {
    _dir: tempfile::TempDir,
    server: NatsServer,
    gateway: Option<GatewayHandle>,
    worker: Option<InProcessWorker>,
    admin: jetstream::Context,
    audit: std::path::PathBuf,
    ucsd_key: nkeys::KeyPair,
    desy: PartnerClient,
    desy_dataset: DatasetGrant,
    desy_job: String,
    desy_job_consumer: String,
}

async fn deploy() -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let gateway_keys = GatewayKeys::load_or_generate(&keys_dir, true).unwrap();
    let admin_key = nkeys::KeyPair::new_user();
    let mut settings = CalloutServerSettings::from_keys(&gateway_keys);
    settings.admin_users.push(admin_key.public_key());
    let server = start_server(|c| c.blocks.extend(callout_server_blocks(&settings))).await;

    let mut ucsd = policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas());
    let ucsd_key = add_new_key(&mut ucsd);
    let mut desy = policy("desy", &["lcls.mfx.mfxp9999.>"], quick_quotas());
    let desy_key = add_new_key(&mut desy);
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    write_policies(&policies, &[ucsd, desy]);
    let worker_key = nkeys::KeyPair::new_user();
    std::fs::write(
        policies.join("roles.toml"),
        format!(
            "[[agent]]\nid = \"mfx-worker\"\nname = \"MFX worker\"\ninstruments = [\"mfx\"]\nkeys = [{{ public = \"{}\" }}]\n",
            worker_key.public_key()
        ),
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut config = callout_config(&server.url(), &policies, &keys_dir);
    config.audit.file = Some(audit.clone());
    if let Some(auth) = config.auth.as_mut() {
        auth.admin_keys.push(admin_key.public_key());
    }
    let gateway = step("gateway", Gateway::start(config)).await.unwrap();

    let admin = jetstream::new(
        ConnectOptions::with_nkey(admin_key.seed().unwrap())
            .connect(server.url())
            .await
            .unwrap(),
    );
    publish(&admin, "mfxp1234", 1, 4, 2, 16).await;
    publish(&admin, "mfxp9999", 1, 4, 2, 16).await;

    // The victim: a dataset consumer and a publish job with its consumer.
    let desy = connect_with_key(&server.url(), "desy", &desy_key)
        .await
        .unwrap();
    let desy_dataset = step(
        "desy request",
        desy.request_dataset(&lclstream_partner::DatasetRequest {
            filters: vec!["lcls.mfx.mfxp9999.>".into()],
            start: lclstream_partner::Start::All,
            end: None,
            label: Some("victim".into()),
        }),
    )
    .await
    .unwrap();
    let root = dir.path().join("data");
    write_run(&root, "mfxp9999", 2, &[12]).await;
    write_run(&root, "mfxp1234", 3, &[8]).await;
    let seed_file = dir.path().join("worker.nk");
    std::fs::write(&seed_file, worker_key.seed().unwrap()).unwrap();
    let toml = worker_toml_with_key(&server.url(), &root, "w1", 400.0, &seed_file);
    let worker = start_worker(&toml);
    let view = submit(&desy, &job("mfxp9999", 2)).await.unwrap();
    let desy_job_consumer = view.grant.expect("a job consumer").consumer;
    let desy_job = view.record.job.clone();
    wait_record(
        &desy,
        &desy_job,
        Duration::from_secs(30),
        "done",
        is(JobState::Done),
    )
    .await;
    Deployment {
        _dir: dir,
        server,
        gateway: Some(gateway),
        worker: Some(worker),
        admin,
        audit,
        ucsd_key,
        desy,
        desy_dataset,
        desy_job,
        desy_job_consumer,
    }
}

/// The attacker's raw connection, with server errors (permission
/// violations) collected.
struct Attacker {
    client: Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Attacker {
    async fn connect(d: &Deployment) -> Attacker {
        let (tx, errors) = mpsc::unbounded_channel();
        let client = ConnectOptions::with_nkey(d.ucsd_key.seed().unwrap())
            .custom_inbox_prefix("_INBOX.ucsd")
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(d.server.url())
            .await
            .expect("the attacker's own key is valid");
        Attacker { client, errors }
    }

    /// Publishes `payload` on `subject` with `reply`; expects the server to
    /// refuse the publish as a permissions violation.
    async fn refused_publish(&mut self, subject: &str, reply: Option<&str>, payload: &str) {
        match reply {
            Some(reply) => self
                .client
                .publish_with_reply(
                    subject.to_string(),
                    reply.to_string(),
                    payload.to_string().into(),
                )
                .await
                .unwrap(),
            None => self
                .client
                .publish(subject.to_string(), payload.to_string().into())
                .await
                .unwrap(),
        }
        self.expect_violation(subject).await;
    }

    async fn refused_subscribe(&mut self, subject: &str) {
        let _sub = self.client.subscribe(subject.to_string()).await.unwrap();
        self.expect_violation(subject).await;
    }

    async fn expect_violation(&mut self, needle: &str) {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            // Bounded: violations arrive in order, a few per attack.
            for _ in 0..200 {
                match self.errors.recv().await {
                    Some(e) if e.contains("Permissions Violation") && e.contains(needle) => {
                        return true
                    }
                    Some(_) => {}
                    None => return false,
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        assert!(found, "no permissions violation for {needle}");
    }
}

/// Nothing arrives on `subscriber` within [`QUIET`].
async fn nothing_arrives(subscriber: &mut async_nats::Subscriber, what: &str) {
    if let Ok(Some(message)) = tokio::time::timeout(QUIET, subscriber.next()).await {
        panic!(
            "{what}: a message arrived on {} ({} bytes)",
            message.subject,
            message.payload.len()
        );
    }
}

/// (delivered stream sequence, ack floor, pending) of a consumer.
async fn consumer_state(js: &jetstream::Context, stream: &str, consumer: &str) -> (u64, u64, u64) {
    let info = js
        .get_stream(stream)
        .await
        .unwrap()
        .consumer_info(consumer)
        .await
        .unwrap_or_else(|e| panic!("{consumer} on {stream} must still exist: {e}"));
    (
        info.delivered.stream_sequence,
        info.ack_floor.stream_sequence,
        info.num_pending,
    )
}

async fn stream_messages(js: &jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

fn audit_lines(d: &Deployment) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&d.audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_of_one_institution_on_another_fails() {
    let mut d = deploy().await;
    let victim_dataset = ("LCLS_MFX", d.desy_dataset.consumer.clone());
    let victim_job = ("LCLS_JOBS_DATA", d.desy_job_consumer.clone());
    let before_dataset = consumer_state(&d.admin, victim_dataset.0, &victim_dataset.1).await;
    let before_job = consumer_state(&d.admin, victim_job.0, &victim_job.1).await;
    let mfx_before = stream_messages(&d.admin, "LCLS_MFX").await;
    let jobs_data_before = stream_messages(&d.admin, "LCLS_JOBS_DATA").await;
    let mut a = Attacker::connect(&d).await;
    let mut loot = a.client.subscribe("_INBOX.ucsd.loot.>").await.unwrap();
    a.client.flush().await.unwrap();

    // 1. Reading the victim's consumers: through the ack subject (+NXT) in
    //    both forms with the attacker's slot name in every other position,
    //    and through the pull and info API.
    for (stream, consumer) in [&victim_dataset, &victim_job] {
        let c = consumer.as_str();
        for subject in [
            format!("$JS.ACK.{stream}.{c}.1.ucsd-c0.1.0.0"),
            format!("$JS.ACK.{stream}.{c}.ucsd-c0.1.1.0.0"),
            format!("$JS.ACK.{stream}.{c}.1.1.1.0.ucsd-c0"),
            format!("$JS.ACK._.h.{stream}.{c}.1.ucsd-c0.1.0.0"),
            format!("$JS.ACK._.h.{stream}.{c}.1.1.1.0.0.ucsd-c0"),
            format!("$JS.ACK.{stream}.ucsd-c0.{stream}.{c}.1.1.1.0.0"),
            format!("$JS.lclstream.API.CONSUMER.MSG.NEXT.{stream}.{c}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{c}"),
            format!("$JS.lclstream.API.CONSUMER.INFO.{stream}.{c}"),
        ] {
            a.refused_publish(&subject, Some("_INBOX.ucsd.loot.1"), r#"+NXT {"batch":8}"#)
                .await;
        }
        // Disrupting them: nak, term, in-progress.
        for verb in ["-NAK", "+TERM", "+WPI", "+ACK"] {
            a.refused_publish(&format!("$JS.ACK.{stream}.{c}.1.1.1.0.0"), None, verb)
                .await;
        }
    }
    // The facility's job work queue (consumer jobs-mfx) is not a partner's.
    a.refused_publish(
        "$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_JOBS.jobs-mfx",
        Some("_INBOX.ucsd.loot.2"),
        "{}",
    )
    .await;
    // The attacker's own slot on a stream it has no grant on.
    a.refused_publish(
        "$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_CXI.ucsd-c0",
        Some("_INBOX.ucsd.loot.3"),
        "{}",
    )
    .await;
    nothing_arrives(&mut loot, "the victim's data").await;

    // 2. Managing consumers or streams at all.
    for subject in [
        format!(
            "$JS.lclstream.API.CONSUMER.DELETE.LCLS_MFX.{}",
            victim_dataset.1
        ),
        format!(
            "$JS.lclstream.API.CONSUMER.PAUSE.LCLS_MFX.{}",
            victim_dataset.1
        ),
        "$JS.lclstream.API.CONSUMER.CREATE.LCLS_MFX.ucsd-c0.lcls.mfx.mfxp9999.>".to_string(),
        "$JS.API.CONSUMER.CREATE.LCLS_MFX.ucsd-c0".to_string(),
        "$JS.API.STREAM.INFO.LCLS_MFX".to_string(),
        "$JS.API.STREAM.PURGE.LCLS_MFX".to_string(),
        "$JS.API.DIRECT.GET.LCLS_MFX".to_string(),
        "$JS.lclstream.API.STREAM.MSG.GET.LCLS_MFX".to_string(),
        "$SRV.PING".to_string(),
    ] {
        a.refused_publish(&subject, Some("_INBOX.ucsd.loot.4"), "{}")
            .await;
    }

    // 3. Writing or forging data, job traffic and records directly.
    for subject in [
        "lcls.mfx.mfxp9999.1.jungfrau".to_string(),
        "lcls.mfx.mfxp1234.1.jungfrau".to_string(),
        format!("lclstream.jobs.data.{}", d.desy_job),
        format!("lclstream.jobs.status.{}", d.desy_job),
        "lclstream.jobs.queue.mfx".to_string(),
        format!("$KV.lclstream-jobs.desy.{}", d.desy_job),
        "_INBOX.desy.notices".to_string(),
        format!("_INBOX.desy.jobs.{}", d.desy_job),
        "lclstream.gateway.desy.release".to_string(),
    ] {
        a.refused_publish(&subject, None, r#"{"forged":true}"#)
            .await;
    }

    // 4. Reading what is not its own.
    for subject in [
        "_INBOX.desy.>",
        "_INBOX.*.notices",
        "_INBOX.>",
        ">",
        "lcls.>",
        "$JS.ACK.>",
        "lclstream.gateway.>",
        "lclstream.jobs.>",
        "$SRV.>",
    ] {
        a.refused_subscribe(subject).await;
    }

    // 5. Replies aimed elsewhere. The gateway answers only inside the
    //    requester's inbox; the server's own answers (JetStream API, pulls)
    //    land in the partner account, where no stream, bucket or facility
    //    API exists.
    let mut victim_notices_raw = d
        .desy
        .client()
        .subscribe("_INBOX.desy.notices")
        .await
        .unwrap();
    let mut victim_watch_raw = d
        .desy
        .client()
        .subscribe(format!("_INBOX.desy.jobs.{}", d.desy_job))
        .await
        .unwrap();
    d.desy.client().flush().await.unwrap();
    let aims = [
        "lcls.mfx.mfxp9999.1.jungfrau".to_string(),
        "_INBOX.desy.notices".to_string(),
        format!("_INBOX.desy.jobs.{}", d.desy_job),
        format!("$KV.lclstream-jobs.desy.{}", d.desy_job),
        "$KV.lclstream-jobs.desy.injected".to_string(),
        "lclstream.jobs.queue.mfx".to_string(),
        "$JS.API.CONSUMER.DELETE.LCLS_MFX.desy-c0".to_string(),
    ];
    for reply in &aims {
        for verb in ["list", "usage", "request", "jobs.list", "jobs.get"] {
            a.client
                .publish_with_reply(
                    format!("lclstream.gateway.ucsd.{verb}"),
                    reply.clone(),
                    "{}".into(),
                )
                .await
                .unwrap();
        }
    }
    // The attacker's own consumer, pulled and inspected with replies aimed
    // at the victim's inbox and the data subjects.
    let own = PartnerClient::from_client(a.client.clone(), "ucsd");
    let own_grant = step(
        "attacker's own dataset",
        own.request_dataset(&lclstream_partner::DatasetRequest {
            filters: vec!["lcls.mfx.mfxp1234.>".into()],
            start: lclstream_partner::Start::All,
            end: None,
            label: Some("attacker".into()),
        }),
    )
    .await
    .unwrap();
    for reply in &aims {
        for subject in [
            format!(
                "$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_MFX.{}",
                own_grant.consumer
            ),
            format!(
                "$JS.lclstream.API.CONSUMER.INFO.LCLS_MFX.{}",
                own_grant.consumer
            ),
        ] {
            a.client
                .publish_with_reply(subject, reply.clone(), r#"{"batch":2}"#.into())
                .await
                .unwrap();
        }
    }
    a.client.flush().await.unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        stream_messages(&d.admin, "LCLS_MFX").await,
        mfx_before,
        "nothing was stored in the data stream"
    );
    assert_eq!(
        stream_messages(&d.admin, "LCLS_JOBS_DATA").await,
        jobs_data_before,
        "nothing was stored in the job data stream"
    );
    assert_eq!(
        stream_messages(&d.admin, "LCLS_JOBS").await,
        0,
        "no job was queued"
    );
    // Pulls aimed at the victim's job status subject deliver the attacker's
    // own messages there; none verifies as the gateway's.
    let notices_key = d.desy.usage().await.unwrap().notices_key;
    assert!(
        notices_key.is_some(),
        "the gateway announces its notice key"
    );
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(300), victim_watch_raw.next()).await
    {
        assert!(
            lclstream_partner::verify_from_gateway(notices_key.as_deref(), &m).is_err(),
            "an attacker's message verified as the gateway's job status"
        );
    }
    // The pulls aimed at the victim's notice subject may deliver the
    // attacker's own messages there (the server allows any reply subject in
    // the account), but the victim's client accepts only signed notices.
    let mut raw_count = 0;
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(300), victim_notices_raw.next()).await
    {
        assert!(
            m.headers
                .as_ref()
                .and_then(|h| h.get("Lclstream-Signature"))
                .is_none(),
            "nothing on the victim's notice subject carries a signature"
        );
        raw_count += 1;
    }
    eprintln!("{raw_count} unsigned messages reached the victim's notice subject");
    let mut verified = step("victim notices", d.desy.notices()).await.unwrap();
    for _ in 0..2 {
        a.client
            .publish_with_reply(
                format!(
                    "$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_MFX.{}",
                    own_grant.consumer
                ),
                "_INBOX.desy.notices",
                r#"{"batch":1}"#.into(),
            )
            .await
            .unwrap();
    }
    let accepted = tokio::time::timeout(QUIET, verified.next()).await;
    assert!(
        !matches!(accepted, Ok(Some(_))),
        "the victim accepted a notice the gateway did not sign: {accepted:?}"
    );
    // The same for the victim's job status as the partner library reads it:
    // once the job has ended the gateway sends nothing more, so anything the
    // status stream yielded would be the attacker's.
    wait_record(
        &d.desy,
        &d.desy_job,
        Duration::from_secs(60),
        "the end",
        |r| r.state.is_terminal(),
    )
    .await;
    let view = get(&d.desy, &d.desy_job).await;
    let mut status = step("victim job status", d.desy.job_status(&view))
        .await
        .unwrap();
    let mut watch_raw = d.desy.client().subscribe(view.watch.clone()).await.unwrap();
    d.desy.client().flush().await.unwrap();
    for _ in 0..2 {
        a.client
            .publish_with_reply(
                format!(
                    "$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_MFX.{}",
                    own_grant.consumer
                ),
                view.watch.clone(),
                r#"{"batch":1}"#.into(),
            )
            .await
            .unwrap();
    }
    let accepted = tokio::time::timeout(QUIET, status.next()).await;
    assert!(
        !matches!(accepted, Ok(Some(_))),
        "the victim accepted a job status the gateway did not sign: {accepted:?}"
    );
    let reached = tokio::time::timeout(Duration::from_millis(300), watch_raw.next()).await;
    eprintln!(
        "attacker's messages on the victim's job status subject: {}",
        if matches!(reached, Ok(Some(_))) {
            "arrived, dropped"
        } else {
            "none arrived"
        }
    );
    let records = d.admin.get_key_value("lclstream-jobs").await.unwrap();
    assert!(records.get("desy.injected").await.unwrap().is_none());
    let audit = audit_lines(&d);
    let refused_replies = audit
        .iter()
        .filter(|l| l["reason"] == "reply_outside_inbox" && l["institution"] == "ucsd")
        .count();
    assert_eq!(
        refused_replies,
        aims.len() * 5,
        "every request with a foreign reply subject is refused and audited"
    );

    // 6. Forged identity: a client-set Nats-Request-Info header names nobody.
    let mut forged = HeaderMap::new();
    forged.insert(
        "Nats-Request-Info",
        r#"{"acc":"PARTNERS","user":"desy-admin","name":"desy"}"#,
    );
    let _ = step(
        "forged usage",
        a.client.request_with_headers(
            "lclstream.gateway.ucsd.usage".to_string(),
            forged.clone(),
            "{}".into(),
        ),
    )
    .await
    .unwrap();
    let submitted = step(
        "forged submit",
        a.client.request_with_headers(
            "lclstream.gateway.ucsd.jobs.submit".to_string(),
            forged,
            serde_json::to_vec(&job("mfxp1234", 3)).unwrap().into(),
        ),
    )
    .await
    .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&submitted.payload).unwrap();
    assert_eq!(
        reply["result"]["record"]["requester"], "institution:ucsd",
        "the job record names who really asked: {reply}"
    );
    for line in audit_lines(&d) {
        if line["action"] == "usage" || line["action"] == "jobs.submit" {
            let institution = line["institution"].as_str().unwrap_or_default();
            assert_eq!(line["who"], format!("institution:{institution}"), "{line}");
        }
        assert!(
            !line.to_string().contains("desy-admin"),
            "a forged name reached the audit log: {line}"
        );
    }

    // 7. Through the gateway: the victim's consumers, jobs and data.
    let refused = own
        .release(&lclstream_partner::ReleaseRequest {
            consumer: Some(d.desy_dataset.consumer.clone()),
            label: None,
        })
        .await;
    assert!(
        matches!(refused, Err(PartnerError::Refused(ref e)) if e.code == ErrorCode::BadRequest),
        "{refused:?}"
    );
    let refused = own
        .request_dataset(&lclstream_partner::DatasetRequest {
            filters: vec!["lcls.mfx.mfxp9999.>".into()],
            start: lclstream_partner::Start::All,
            end: None,
            label: Some("victim".into()),
        })
        .await;
    assert!(
        matches!(refused, Err(PartnerError::Refused(ref e)) if e.code == ErrorCode::NoGrant),
        "{refused:?}"
    );
    for verb in ["jobs.get", "jobs.cancel"] {
        let refused: Result<serde_json::Value, _> = own
            .call_raw(
                verb,
                serde_json::to_vec(&JobRef {
                    job: d.desy_job.clone(),
                })
                .unwrap(),
            )
            .await;
        assert!(
            matches!(refused, Err(PartnerError::Refused(_))),
            "{verb}: {refused:?}"
        );
    }
    let refused = submit(&own, &job("mfxp9999", 2)).await;
    assert!(
        matches!(refused, Err(PartnerError::Refused(ref e)) if e.code == ErrorCode::NoGrant),
        "{refused:?}"
    );

    // 8. Speaking as the victim: its key is not the attacker's, and the
    //    attacker's key cannot use the victim's subjects or inbox.
    let as_victim = connect_with_key(&d.server.url(), "desy", &d.ucsd_key).await;
    if let Ok(client) = as_victim {
        assert!(
            client.usage().await.is_err(),
            "ucsd's key speaks for ucsd only"
        );
    }

    // The victim is untouched.
    assert_eq!(
        consumer_state(&d.admin, victim_dataset.0, &victim_dataset.1).await,
        before_dataset
    );
    assert_eq!(
        consumer_state(&d.admin, victim_job.0, &victim_job.1).await,
        before_job
    );
    let (summary, indices) = request_and_pull(
        &d.desy,
        "lcls.mfx.mfxp9999.>",
        "victim",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        summary.events, 8,
        "the victim still gets every one of its events"
    );
    assert_eq!(indices, (0..8).collect::<Vec<u64>>());

    // 9. A bad record in the job-records bucket breaks nobody's listing.
    let records = d.admin.get_key_value("lclstream-jobs").await.unwrap();
    records
        .put("desy.garbage", "not json".into())
        .await
        .unwrap();
    let stolen = records
        .get(format!(
            "ucsd.{}",
            reply["result"]["record"]["job"].as_str().unwrap()
        ))
        .await
        .unwrap()
        .expect("the attacker's job record");
    records.put("desy.impostor", stolen).await.unwrap();
    let list: JobList = step(
        "victim lists jobs",
        d.desy.call_raw(
            VERB_LIST,
            serde_json::to_vec(&JobListRequest::default()).unwrap(),
        ),
    )
    .await
    .unwrap_or_else(|e| {
        let log = std::fs::read_to_string(d.server.log_path()).unwrap_or_default();
        let violations: Vec<&str> = log.lines().filter(|l| l.contains("Violation")).collect();
        panic!(
            "a bad record must not break the listing: {e}\n{}",
            violations.join("\n")
        )
    });
    assert_eq!(
        list.jobs.iter().map(|r| r.job.clone()).collect::<Vec<_>>(),
        vec![d.desy_job.clone()]
    );
    for bad in ["garbage", "impostor"] {
        let got: Result<serde_json::Value, _> = d
            .desy
            .call_raw(
                "jobs.get",
                serde_json::to_vec(&JobRef { job: bad.into() }).unwrap(),
            )
            .await;
        assert!(
            matches!(got, Err(PartnerError::Refused(ref e)) if e.code == ErrorCode::BadRequest),
            "{bad}: {got:?}"
        );
    }
    assert!(audit_lines(&d).iter().any(|l| l["reason"] == "bad_record"));

    if let Some(worker) = d.worker.take() {
        worker.stop().await;
    }
    if let Some(gateway) = d.gateway.take() {
        gateway.shutdown().await;
    }
    // Least privilege did not get in the way of the gateway's and the
    // worker's own work: none of their connections hit a permission.
    let log = std::fs::read_to_string(d.server.log_path()).unwrap_or_default();
    let own: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Violation") && !l.contains("PARTNERS/user:"))
        .collect();
    assert!(
        own.is_empty(),
        "facility-side violations:\n{}",
        own.join("\n")
    );
}
