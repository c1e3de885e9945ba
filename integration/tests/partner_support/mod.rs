//! Shared set-up of the gateway and partner tests: a real nats-server, an
//! in-process gateway over policy files, and synthetic data published with
//! the wire format.
#![allow(dead_code)]

use std::future::IntoFuture;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use lclstream_gateway::gateway::{AuthConfig, Gateway, GatewayConfig, GatewayHandle};
use lclstream_gateway::policy::{Grant, InstitutionKey, InstitutionPolicy, Quotas};
use lclstream_gateway::quota::ManualClock;
use lclstream_nats::server::NatsServer;
use lclstream_nats::streams::StreamSettings;
use lclstream_nats::subjects::DataSubject;
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{self, Batch, EncodeOptions, Event};
use lclstream_partner::{
    BatchInfo, CallbackSink, DatasetRequest, PartnerClient, PartnerConfig, PullOptions,
    PullSummary, Start,
};
use time::OffsetDateTime;

/// Bound on any single awaited step.
pub const STEP: Duration = Duration::from_secs(30);

/// Awaits `f` for at most [`STEP`].
pub async fn step<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

/// A policy granting `subjects` of `LCLS_MFX` with `quotas`.
pub fn policy(id: &str, subjects: &[&str], quotas: Quotas) -> InstitutionPolicy {
    InstitutionPolicy {
        id: id.to_string(),
        name: format!("Institution {id}"),
        keys: Vec::new(),
        grants: vec![Grant {
            stream: "LCLS_MFX".into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            not_before: None,
            not_after: None,
        }],
        quotas,
    }
}

/// Adds a fresh nkey to `policy` and returns its key pair.
pub fn add_new_key(policy: &mut InstitutionPolicy) -> nkeys::KeyPair {
    let key = nkeys::KeyPair::new_user();
    policy.keys.push(InstitutionKey {
        public: key.public_key(),
        comment: "test".into(),
        revoked: false,
        expires: None,
    });
    key
}

/// A gateway configuration that also runs the auth callout with the keys in `keys_dir`.
pub fn callout_config(url: &str, policies: &Path, keys_dir: &Path) -> GatewayConfig {
    let mut config = GatewayConfig::local(url, policies);
    config.auth = Some(AuthConfig {
        keys_dir: keys_dir.to_path_buf(),
        encrypt: true,
        user_ttl_secs: 600,
        callout: true,
        admin_keys: Vec::new(),
    });
    config
}

/// Connects as `institution` with its nkey `key` (through the auth callout
/// when the server runs one), bounded by [`STEP`].
pub async fn connect_with_key(
    url: &str,
    institution: &str,
    key: &nkeys::KeyPair,
) -> Result<PartnerClient, lclstream_partner::PartnerError> {
    step(
        "partner connect",
        PartnerClient::connect(&PartnerConfig {
            url: url.to_string(),
            institution: institution.to_string(),
            seed: Some(key.seed().unwrap()),
        }),
    )
    .await
}

/// Quotas with quick redelivery (a crashed partner's messages come back in a second).
pub fn quick_quotas() -> Quotas {
    let mut quotas = Quotas::default();
    quotas.pull.ack_wait_secs = 1;
    quotas
}

/// Writes policies as TOML files into `dir`.
pub fn write_policies(dir: &Path, policies: &[InstitutionPolicy]) {
    for p in policies {
        let text = toml::to_string(p).expect("policy serializes");
        std::fs::write(dir.join(format!("{}.toml", p.id)), text).expect("policy written");
    }
}

/// A running server, gateway and test clock.
pub struct Setup {
    pub server: NatsServer,
    pub gateway: GatewayHandle,
    pub clock: ManualClock,
    pub admin: async_nats::Client,
    pub js: jetstream::Context,
    pub dir: tempfile::TempDir,
}

/// Starts a server and a gateway over `policies`; the meter ticks only when a test calls it.
pub async fn setup(policies: &[InstitutionPolicy]) -> Setup {
    let server = NatsServer::start_default().expect("nats-server starts");
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("policies");
    std::fs::create_dir_all(&policy_dir).unwrap();
    write_policies(&policy_dir, policies);
    let mut config = GatewayConfig::local(&server.url(), &policy_dir);
    config.audit.file = Some(dir.path().join("audit.jsonl"));
    config.meter.interval_ms = 3_600_000;
    let clock = ManualClock::new(OffsetDateTime::now_utc());
    let gateway = step(
        "gateway start",
        Gateway::start_with_clock(config, Arc::new(clock.clone())),
    )
    .await
    .expect("gateway starts");
    let admin = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(admin.clone());
    Setup {
        server,
        gateway,
        clock,
        admin,
        js,
        dir,
    }
}

/// Publishes `batches` batches of `per_batch` events (frames of `side`x`side`) to
/// `lcls.mfx.<experiment>.<run>.jungfrau`; returns the number of messages.
pub async fn publish(
    js: &jetstream::Context,
    experiment: &str,
    run: u32,
    batches: u64,
    per_batch: u64,
    side: u64,
) -> usize {
    js.get_or_create_stream(StreamSettings::for_instrument("mfx").to_config())
        .await
        .expect("stream");
    let subject = DataSubject::new("mfx", experiment, run, "jungfrau").unwrap();
    let model = DetectorModel {
        height: side,
        width: side,
        ..Default::default()
    };
    let options = EncodeOptions {
        max_payload: 1024 * 1024,
        ..Default::default()
    };
    let mut acks = Vec::new();
    for b in 0..batches {
        let events = (b * per_batch..(b + 1) * per_batch)
            .map(|i| model.event("jungfrau", i, 1_000 + i))
            .collect();
        let batch = Batch::new(experiment, run, "jungfrau", events).unwrap();
        for message in wire::encode(batch, &options).unwrap().messages {
            let ack = js
                .publish_with_headers(subject.to_string(), message.headers, message.payload)
                .await
                .expect("publish");
            acks.push(ack);
        }
    }
    let count = acks.len();
    for ack in acks {
        step("publish ack", ack.into_future())
            .await
            .expect("stored");
    }
    count
}

/// A partner connection of `institution` (server without authentication).
pub async fn partner(url: &str, institution: &str) -> PartnerClient {
    step(
        "partner connect",
        PartnerClient::connect(&PartnerConfig {
            url: url.to_string(),
            institution: institution.to_string(),
            seed: None,
        }),
    )
    .await
    .expect("partner connects")
}

/// Names of the consumers on `LCLS_MFX` that hold slots of `institution`.
pub async fn slot_consumers(js: &jetstream::Context, institution: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let Ok(stream) = js.get_stream("LCLS_MFX").await else {
        return Vec::new();
    };
    let names: Vec<String> = step("consumer names", stream.consumer_names().try_collect())
        .await
        .unwrap();
    let prefix = format!("{institution}-c");
    let mut names: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

/// Requests `filter` under `label` and pulls until idle for `idle`; returns
/// the pull summary and the event indices received, sorted.
pub async fn request_and_pull(
    partner: &PartnerClient,
    filter: &str,
    label: &str,
    idle: Duration,
) -> (PullSummary, Vec<u64>) {
    let grant = step(
        "request",
        partner.request_dataset(&DatasetRequest {
            filters: vec![filter.to_string()],
            start: Start::All,
            end: None,
            label: Some(label.to_string()),
        }),
    )
    .await
    .expect("the dataset is granted");
    let collected = Arc::new(Mutex::new(Vec::new()));
    let mut sink = {
        let collected = collected.clone();
        CallbackSink::new(move |_: &BatchInfo, e: Event| {
            collected.lock().unwrap().push(e.index);
            Ok(())
        })
    };
    let options = PullOptions {
        idle_timeout: idle,
        ..Default::default()
    };
    let summary = step("pull", partner.pull(&grant, &options, &mut sink))
        .await
        .expect("consumer info, pull and ack are allowed");
    let mut indices = collected.lock().unwrap().clone();
    indices.sort();
    (summary, indices)
}
