//! Cancelling a running job stops its worker and releases its consumer; a
//! run without files fails with a clear error; requests outside the grants,
//! malformed or over a quota are refused with the documented codes.

mod jobs_support;
mod partner_support;

use std::time::Duration;

use jobs_support::*;
use lclstream_gateway::jobs::protocol::{JobBatch, JobState};
use lclstream_gateway::jobs::protocol::{
    JobRef, JobView, DATA_STREAM, QUEUE_STREAM, VERB_CANCEL, VERB_SUBMIT,
};
use lclstream_gateway::policy::Quotas;
use lclstream_gateway::service::protocol::ErrorCode;
use lclstream_partner::PartnerError;
use partner_support::*;

fn refused_code<T: std::fmt::Debug>(result: Result<T, PartnerError>) -> ErrorCode {
    match result {
        Err(PartnerError::Refused(body)) => {
            assert!(!body.reason.is_empty(), "a refusal explains itself");
            body.code
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn subject_messages(js: &async_nats::jetstream::Context, subject: &str) -> u64 {
    use futures::TryStreamExt;
    let stream = js.get_stream_no_info(DATA_STREAM).await.unwrap();
    let counts: Vec<(String, usize)> = step(
        "subject counts",
        stream
            .info_with_subjects(subject)
            .await
            .unwrap()
            .try_collect(),
    )
    .await
    .unwrap();
    counts.iter().map(|(_, n)| *n as u64).sum()
}

#[tokio::test]
async fn cancel_stops_the_job_and_releases_its_consumer() {
    let quotas = Quotas {
        concurrent_consumers: 2,
        ..Default::default()
    };
    let s = setup_jobs(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quotas)]).await;
    let root = s.dir.path().join("data");
    write_run(&root, "mfxp1234", 5, &[300]).await;
    let worker = start_worker(&worker_toml(&s.server.url(), &root, "w1", 60.0));
    let ucsd = partner(&s.server.url(), "ucsd").await;
    let mut request = job("mfxp1234", 5);
    request.batch = JobBatch {
        max_events: 2,
        max_bytes: 1 << 20,
    };
    let view = submit(&ucsd, &request).await.expect("job accepted");
    let id = view.record.job.clone();
    wait_record(&ucsd, &id, Duration::from_secs(20), "running", |r| {
        r.state == JobState::Running && r.events > 0
    })
    .await;

    let cancelled: JobView = step(
        "jobs.cancel",
        ucsd.call_raw(
            VERB_CANCEL,
            serde_json::to_vec(&JobRef { job: id.clone() }).unwrap(),
        ),
    )
    .await
    .expect("cancelled");
    assert_eq!(cancelled.record.state, JobState::Cancelled);
    assert!(cancelled.grant.is_none(), "the consumer is released");
    let data = s.js.get_stream(DATA_STREAM).await.unwrap();
    assert!(
        data.consumer_info("ucsd-c0").await.is_err(),
        "the job's consumer slot is free"
    );
    // The worker notices at its next progress update and gives the job up:
    // the work queue empties and the job's data is gone.
    let mut queue = s.js.get_stream(QUEUE_STREAM).await.unwrap();
    let mut drained = false;
    for _ in 0..100 {
        if queue.info().await.unwrap().state.messages == 0
            && subject_messages(&s.js, &view.record.subject).await == 0
        {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        drained,
        "the worker released the cancelled job and its data was purged"
    );
    let record = get(&ucsd, &id).await.record;
    assert_eq!(
        record.state,
        JobState::Cancelled,
        "cancel wins over the worker"
    );
    assert!(record.events < 300, "the job stopped early");
    assert!(get(&ucsd, &id).await.grant.is_none());

    // A run without files fails, naming what it looked for.
    let missing = submit(&ucsd, &job("mfxp1234", 99)).await.expect("accepted");
    let failed = wait_record(
        &ucsd,
        &missing.record.job,
        Duration::from_secs(20),
        "failed",
        is(JobState::Failed),
    )
    .await;
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("run 99") && error.contains("run0099"),
        "{error}"
    );
    assert_eq!(
        missing.record.consumer, "ucsd-c0",
        "the freed slot is reused"
    );

    let report = worker.stop().await;
    assert_eq!(report.cancelled, 1);
    assert_eq!(report.failed, 1);
}

#[tokio::test]
async fn requests_outside_grants_malformed_or_over_quota_are_refused_with_codes() {
    let ucsd_quotas = Quotas {
        concurrent_consumers: 1,
        ..Default::default()
    };
    let desy_quotas = Quotas {
        requests_per_hour: 1,
        ..Default::default()
    };
    let s = setup_jobs(&[
        policy("ucsd", &["lcls.mfx.mfxp1234.>"], ucsd_quotas),
        policy("desy", &["lcls.mfx.mfxp1234.>"], desy_quotas),
    ])
    .await;
    let ucsd = partner(&s.server.url(), "ucsd").await;
    let desy = partner(&s.server.url(), "desy").await;

    // Outside the grants: another experiment, or a run range reaching beyond none.
    assert_eq!(
        refused_code(submit(&ucsd, &job("mfxp9999", 1)).await),
        ErrorCode::NoGrant
    );
    // Malformed: unknown field, bad token, bad range, oversized body.
    for body in [
        br#"{"instrument":"mfx","experiment":"mfxp1234","run":1,"bogus":true}"#.to_vec(),
        br#"{"instrument":"mfx","experiment":"mfx.p1234","run":1}"#.to_vec(),
        br#"{"instrument":"mfx","experiment":"mfxp1234","run":5,"run_end":4}"#.to_vec(),
        br#"{"instrument":"mfx","experiment":"mfxp1234","run":1,"processing":{"bin":0}}"#.to_vec(),
        vec![b' '; 20_000],
    ] {
        let result: Result<JobView, _> = step("bad submit", ucsd.call_raw(VERB_SUBMIT, body)).await;
        assert_eq!(refused_code(result), ErrorCode::BadRequest);
    }
    // Another institution's job is not visible.
    let accepted = submit(&ucsd, &job("mfxp1234", 1)).await.expect("accepted");
    let result: Result<JobView, _> = step(
        "foreign get",
        desy.call_raw(
            "jobs.get",
            serde_json::to_vec(&JobRef {
                job: accepted.record.job.clone(),
            })
            .unwrap(),
        ),
    )
    .await;
    assert_eq!(refused_code(result), ErrorCode::BadRequest);
    // Each job holds a consumer slot: ucsd's only slot is taken.
    assert_eq!(
        refused_code(submit(&ucsd, &job("mfxp1234", 2)).await),
        ErrorCode::QuotaConsumers
    );
    // Requests per hour count jobs.
    submit(&desy, &job("mfxp1234", 1))
        .await
        .expect("first accepted");
    assert_eq!(
        refused_code(submit(&desy, &job("mfxp1234", 2)).await),
        ErrorCode::QuotaRequests
    );
    // Exhausted bytes refuse new jobs.
    let step_ucsd = Quotas::default().bytes_per_day;
    s.gateway.quotas().add_bytes("ucsd", step_ucsd);
    assert_eq!(
        refused_code(submit(&ucsd, &job("mfxp1234", 2)).await),
        ErrorCode::QuotaBytes
    );
    // Unknown institution.
    let nobody = partner(&s.server.url(), "nobody").await;
    assert_eq!(
        refused_code(submit(&nobody, &job("mfxp1234", 1)).await),
        ErrorCode::UnknownInstitution
    );
    // Every refusal and acceptance is audited.
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"jobs.submit\""), "{audit}");
    assert!(audit.contains("quota_consumers"));
}
