//! Publish jobs with the auth callout: an institution connected with the
//! permissions the callout issues (requests under its own id, its consumer
//! slots, its private inbox) submits a job, watches its forwarded status and
//! pulls its data; nothing beyond the dataset permissions is needed. The
//! worker runs with a facility agent's key and the agent role's permissions.

mod jobs_support;
mod partner_support;

use std::time::Duration;

use futures::StreamExt;
use jobs_support::*;
use lclstream_gateway::auth::{callout_server_blocks, CalloutServerSettings};
use lclstream_gateway::gateway::Gateway;
use lclstream_gateway::jobs::protocol::{JobRecord, JobState};
use lclstream_gateway::keys::GatewayKeys;
use partner_support::*;

#[tokio::test]
async fn an_institution_with_callout_permissions_submits_watches_and_pulls_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let gateway_keys = GatewayKeys::load_or_generate(&keys_dir, true).expect("gateway keys");
    let settings = CalloutServerSettings::from_keys(&gateway_keys);
    let server = start_server(|c| c.blocks.extend(callout_server_blocks(&settings))).await;
    let mut ucsd = policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas());
    let ucsd_key = add_new_key(&mut ucsd);
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    write_policies(&policies, &[ucsd]);
    // The worker connects as a facility agent; its role covers the job subjects.
    let worker_key = nkeys::KeyPair::new_user();
    std::fs::write(
        policies.join("roles.toml"),
        format!(
            "[[agent]]\nid = \"mfx-worker\"\nname = \"MFX job worker\"\ninstruments = [\"mfx\"]\nkeys = [{{ public = \"{}\" }}]\n",
            worker_key.public_key()
        ),
    )
    .unwrap();
    let config = callout_config(&server.url(), &policies, &keys_dir);
    let gateway = step("gateway", Gateway::start(config))
        .await
        .expect("gateway starts with the callout");

    let root = dir.path().join("data");
    write_run(&root, "mfxp1234", 2, &[24]).await;
    let seed_file = dir.path().join("worker.nk");
    std::fs::write(&seed_file, worker_key.seed().unwrap()).unwrap();
    let toml = worker_toml_with_key(&server.url(), &root, "w1", 40.0, &seed_file);
    let worker = start_worker(&toml);

    let partner = connect_with_key(&server.url(), "ucsd", &ucsd_key)
        .await
        .expect("the callout authorizes the institution's key");
    let view = submit(&partner, &job("mfxp1234", 2))
        .await
        .expect("job accepted");
    // Status is forwarded into the institution's private inbox.
    let mut updates = step("subscribe", partner.client().subscribe(view.watch.clone()))
        .await
        .expect("the institution may subscribe to its inbox");
    let (summary, received) = pull_job(&partner, &view, 24, Duration::from_secs(20)).await;
    assert_eq!(summary.events, 24, "{summary:?}");
    assert_eq!(received.lock().unwrap().len(), 24);
    let mut last = None;
    for _ in 0..200 {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(10), updates.next()).await
        else {
            break;
        };
        let record: JobRecord = serde_json::from_slice(&message.payload).unwrap();
        let finished = record.state.is_terminal();
        last = Some(record);
        if finished {
            break;
        }
    }
    let last = last.expect("status messages arrive in the inbox");
    assert_eq!(last.state, JobState::Done);
    assert_eq!(last.events, 24);
    let done = get(&partner, &view.record.job).await;
    assert_eq!(done.record.state, JobState::Done);
    worker.stop().await;
    gateway.shutdown().await;
}
