//! A worker process SIGKILLed in the middle of a job: the job is redelivered
//! after the work queue's ack wait, a second worker process runs it again,
//! and the requester, pulling all along, gets every event exactly once (the
//! republished batches carry the same message ids and are dropped by the stream).

mod jobs_support;
mod partner_support;

use std::time::Duration;

use jobs_support::*;
use lclstream_gateway::jobs::protocol::{JobBatch, JobState, DATA_STREAM, QUEUE_STREAM};
use lclstream_gateway::policy::Quotas;
use partner_support::*;

#[tokio::test]
async fn a_killed_worker_s_job_completes_on_another_without_loss_or_duplicates() {
    let s = setup_jobs(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], Quotas::default())]).await;
    let root = s.dir.path().join("data");
    write_run(&root, "mfxp1234", 3, &[120, 120]).await;
    let total = 240u64;
    // Paced reading keeps the job running long enough to kill its worker mid-way.
    let mut first = WorkerProcess::start(
        s.dir.path(),
        "w1",
        &worker_toml(&s.server.url(), &root, "w1", 80.0),
    )
    .await;
    let ucsd = partner(&s.server.url(), "ucsd").await;
    let mut request = job("mfxp1234", 3);
    request.batch = JobBatch {
        max_events: 4,
        max_bytes: 1 << 20,
    };
    let view = submit(&ucsd, &request).await.expect("job accepted");
    let id = view.record.job.clone();

    // The requester pulls from the start, across the crash.
    let puller = {
        let ucsd = ucsd.clone();
        let view = view.clone();
        tokio::spawn(async move { pull_job(&ucsd, &view, total, Duration::from_secs(25)).await })
    };

    let running = wait_record(&ucsd, &id, Duration::from_secs(30), "progress on w1", |r| {
        r.state == JobState::Running && r.events >= 40
    })
    .await;
    assert_eq!(
        running.worker.as_deref(),
        Some("w1"),
        "{}",
        first.log_text()
    );
    first.kill();
    let at_kill = get(&ucsd, &id).await.record;
    assert!(
        at_kill.events < total,
        "w1 was killed before finishing ({} events)",
        at_kill.events
    );

    let second = WorkerProcess::start(
        s.dir.path(),
        "w2",
        &worker_toml(&s.server.url(), &root, "w2", 0.0),
    )
    .await;
    let done = wait_record(
        &ucsd,
        &id,
        Duration::from_secs(30),
        "done on w2",
        is(JobState::Done),
    )
    .await;
    assert_eq!(done.worker.as_deref(), Some("w2"), "{}", second.log_text());
    assert_eq!(done.attempts, 2);
    assert_eq!(done.events, total);
    assert_eq!(done.events_total, Some(total));

    let (summary, received) = step("puller", puller).await.expect("puller task");
    assert_eq!(summary.events, total, "{summary:?}");
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len() as u64, total, "no event lost");
    assert!(
        received.values().all(|(times, _)| *times == 1),
        "no event delivered twice"
    );
    assert_eq!(
        received.keys().map(|(_, i)| *i).collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>()
    );
    // The stream holds each batch once: republished batches were dropped as duplicates.
    let mut data = s.js.get_stream(DATA_STREAM).await.unwrap();
    let info = data.info().await.unwrap();
    assert_eq!(
        info.state.messages,
        total / 4,
        "one message per batch of 4 events"
    );
}

#[tokio::test]
async fn a_job_out_of_deliveries_is_marked_failed() {
    let s = setup_jobs(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], Quotas::default())]).await;
    let root = s.dir.path().join("data");
    write_run(&root, "mfxp1234", 4, &[200]).await;
    // One delivery only: once its worker dies, nobody may retry the job.
    let toml = worker_toml(&s.server.url(), &root, "w1", 50.0)
        .replace("max_deliver = 4", "max_deliver = 1");
    let mut worker = WorkerProcess::start(s.dir.path(), "w1", &toml).await;
    let ucsd = partner(&s.server.url(), "ucsd").await;
    let view = submit(&ucsd, &job("mfxp1234", 4))
        .await
        .expect("job accepted");
    let id = view.record.job.clone();
    wait_record(&ucsd, &id, Duration::from_secs(30), "running", |r| {
        r.state == JobState::Running && r.events > 0
    })
    .await;
    worker.kill();
    let failed = wait_record(
        &ucsd,
        &id,
        Duration::from_secs(30),
        "failed",
        is(JobState::Failed),
    )
    .await;
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("1 deliveries"), "{error}");
    // The abandoned message left the work queue.
    let mut queue = s.js.get_stream(QUEUE_STREAM).await.unwrap();
    let mut empty = false;
    for _ in 0..50 {
        if queue.info().await.unwrap().state.messages == 0 {
            empty = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(empty, "the queue is empty");
}
