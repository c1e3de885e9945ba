//! Measurements (ignored by default; run in release):
//! `cargo test --release -p lclstream-integration --test partner_throughput -- --ignored --nocapture`
//!
//! - pull rate of the partner library through a gateway-granted consumer,
//!   into a counting sink and into HDF5 (detector frames 512x1024 u16);
//! - latency of gateway requests (new grant + release, resume by label).

mod partner_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lclstream_gateway::policy::Quotas;
use lclstream_partner::hdf5_sink::Hdf5Sink;
use lclstream_partner::{CallbackSink, DatasetRequest, PullOptions, ReleaseRequest, Start};
use partner_support::*;

fn request(label: &str) -> DatasetRequest {
    DatasetRequest {
        filters: vec!["lcls.mfx.mfxp1234.>".into()],
        start: Start::All,
        end: None,
        label: Some(label.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn partner_pull_rate_and_request_latency() {
    let quotas = Quotas {
        requests_per_hour: 100_000,
        concurrent_consumers: 8,
        ..Quotas::default()
    };
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quotas)]).await;
    let (batches, per_batch, raw_event) = (100u64, 4u64, 512 * 1024 * 2u64);
    let started = Instant::now();
    publish_frames(&s, batches, per_batch).await;
    let stored =
        s.js.get_stream("LCLS_MFX")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .bytes;
    eprintln!(
        "published {} events ({} MiB raw, {:.1} MiB stored) in {:?}",
        batches * per_batch,
        (batches * per_batch * raw_event) >> 20,
        stored as f64 / 1048576.0,
        started.elapsed()
    );
    let client = partner(&s.server.url(), "ucsd").await;
    let options = PullOptions {
        idle_timeout: Duration::from_secs(2),
        ..Default::default()
    };

    for (label, hdf5) in [("count", false), ("hdf5", true)] {
        let grant = client.request_dataset(&request(label)).await.unwrap();
        let started = Instant::now();
        let summary = if hdf5 {
            let mut sink = Hdf5Sink::open(&s.dir.path().join("rate.h5")).unwrap();
            client.pull(&grant, &options, &mut sink).await.unwrap()
        } else {
            let count = Arc::new(AtomicU64::new(0));
            let counter = count.clone();
            let mut sink = CallbackSink::new(move |_b: &lclstream_partner::BatchInfo, _e| {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(())
            });
            client.pull(&grant, &options, &mut sink).await.unwrap()
        };
        // The idle timeout ends the pull; it is not part of the transfer.
        let secs = (started.elapsed() - options.idle_timeout).as_secs_f64();
        assert_eq!(summary.events, batches * per_batch);
        eprintln!(
            "pull into {label}: {} events in {secs:.2} s: {:.0} events/s, {:.0} MiB/s raw, {:.1} MiB/s on the wire",
            summary.events,
            summary.events as f64 / secs,
            (summary.events * raw_event) as f64 / secs / 1048576.0,
            summary.bytes as f64 / secs / 1048576.0
        );
        client
            .release(&ReleaseRequest {
                consumer: Some(grant.consumer),
                label: None,
            })
            .await
            .unwrap();
    }

    let mut grant_times = Vec::new();
    let mut resume_times = Vec::new();
    for i in 0..50 {
        let t = Instant::now();
        let grant = client
            .request_dataset(&request(&format!("l{i}")))
            .await
            .unwrap();
        grant_times.push(t.elapsed());
        let t = Instant::now();
        let again = client
            .request_dataset(&request(&format!("l{i}")))
            .await
            .unwrap();
        resume_times.push(t.elapsed());
        assert!(again.resumed);
        client
            .release(&ReleaseRequest {
                consumer: Some(grant.consumer),
                label: None,
            })
            .await
            .unwrap();
    }
    grant_times.sort();
    resume_times.sort();
    eprintln!(
        "request latency over 50: new grant median {:?} p90 {:?}; resume median {:?} p90 {:?}",
        grant_times[25], grant_times[45], resume_times[25], resume_times[45]
    );
}

async fn publish_frames(s: &Setup, batches: u64, per_batch: u64) {
    use lclstream_nats::streams::StreamSettings;
    use lclstream_nats::synthetic::DetectorModel;
    use lclstream_nats::wire::{self, Batch, EncodeOptions};
    s.js.get_or_create_stream(StreamSettings::for_instrument("mfx").to_config())
        .await
        .unwrap();
    let model = DetectorModel::default();
    let options = EncodeOptions::default();
    let mut acks = Vec::new();
    for b in 0..batches {
        let events = (b * per_batch..(b + 1) * per_batch)
            .map(|i| model.event("jungfrau", i, i))
            .collect();
        let batch = Batch::new("mfxp1234", 1, "jungfrau", events).unwrap();
        for m in wire::encode(batch, &options).unwrap().messages {
            acks.push(
                s.js.publish_with_headers("lcls.mfx.mfxp1234.1.jungfrau", m.headers, m.payload)
                    .await
                    .unwrap(),
            );
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
}
