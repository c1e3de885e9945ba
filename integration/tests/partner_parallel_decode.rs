//! Several decode threads keep the order of events per subject and deliver
//! every event exactly once, also across a pull stopped at `max_events` and
//! resumed: batches of very different sizes (some split into chunks) from two
//! interleaved runs finish decoding out of order, and must still reach the
//! sink in arrival order.

mod partner_support;

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lclstream_nats::streams::StreamSettings;
use lclstream_nats::subjects::DataSubject;
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{self, Batch, EncodeOptions, Event};
use lclstream_partner::{BatchInfo, CallbackSink, DatasetRequest, PullOptions, Start, StopReason};
use partner_support::*;

/// Batches of 1..=9 events of 192x192 frames (72 KiB raw each, with read
/// noise): the large ones exceed the 256 KiB payload limit and are chunked.
async fn publish_interleaved(s: &Setup, batches: u64) -> BTreeMap<u32, u64> {
    s.js.get_or_create_stream(StreamSettings::for_instrument("mfx").to_config())
        .await
        .expect("stream");
    let model = DetectorModel {
        height: 192,
        width: 192,
        ..Default::default()
    };
    let options = EncodeOptions {
        max_payload: 256 * 1024,
        ..Default::default()
    };
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    let mut acks = Vec::new();
    for b in 0..batches {
        for run in [7u32, 8] {
            let size = 1 + (b * 5 + run as u64) % 9;
            let first = *next.entry(run).or_default();
            let events = (first..first + size)
                .map(|i| model.event("jungfrau", i, 1_000 + i))
                .collect();
            next.insert(run, first + size);
            let subject = DataSubject::new("mfx", "mfxp1234", run, "jungfrau").unwrap();
            let batch = Batch::new("mfxp1234", run, "jungfrau", events).unwrap();
            for message in wire::encode(batch, &options).unwrap().messages {
                let ack = s
                    .js
                    .publish_with_headers(subject.to_string(), message.headers, message.payload)
                    .await
                    .expect("publish");
                acks.push(ack);
            }
        }
    }
    for ack in acks {
        step("publish ack", ack.into_future())
            .await
            .expect("stored");
    }
    next
}

type Received = Arc<Mutex<BTreeMap<String, Vec<u64>>>>;

fn recording_sink(received: Received) -> impl lclstream_partner::EventSink {
    CallbackSink::new(move |b: &BatchInfo, e: Event| {
        received
            .lock()
            .unwrap()
            .entry(b.subject.clone())
            .or_default()
            .push(e.index);
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_decode_threads_keep_order_per_subject_and_deliver_once() {
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas())]).await;
    let totals = publish_interleaved(&s, 24).await;
    let all: u64 = totals.values().sum();
    let client = partner(&s.server.url(), "ucsd").await;
    let grant = step(
        "request",
        client.request_dataset(&DatasetRequest {
            filters: vec!["lcls.mfx.mfxp1234.>".into()],
            start: Start::All,
            end: None,
            label: Some("parallel".into()),
        }),
    )
    .await
    .expect("granted");
    let received: Received = Arc::default();

    // First pull stops in the middle (part of a batch is handed back), the
    // second one reads the rest; both with 4 decode threads.
    let stop_at = all / 3;
    let mut sink = recording_sink(received.clone());
    let options = PullOptions {
        batch_messages: 16,
        max_events: Some(stop_at),
        idle_timeout: Duration::from_secs(2),
        decode_threads: 4,
        ..Default::default()
    };
    let first = step("first pull", client.pull(&grant, &options, &mut sink))
        .await
        .expect("pull");
    assert_eq!(first.stop, StopReason::MaxEvents);
    assert_eq!(first.events, stop_at);
    let options = PullOptions {
        max_events: None,
        ..options
    };
    let second = step("second pull", client.pull(&grant, &options, &mut sink))
        .await
        .expect("pull");
    assert_eq!(second.stop, StopReason::Idle);
    assert_eq!(first.rejected + second.rejected, 0);

    // A sink without memory may see the written part of a handed-back batch
    // again: keep the first occurrence, then everything must be in order.
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "both subjects delivered: {received:?}");
    for (run, total) in &totals {
        let subject = DataSubject::new("mfx", "mfxp1234", *run, "jungfrau")
            .unwrap()
            .to_string();
        let indices = &received[&subject];
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<u64> = indices
            .iter()
            .copied()
            .filter(|i| seen.insert(*i))
            .collect();
        assert_eq!(
            firsts,
            (0..*total).collect::<Vec<_>>(),
            "{subject}: events in order, none missing"
        );
        // Repeats only come from the one batch split by max_events.
        assert!(
            indices.len() as u64 - total <= 9,
            "{subject}: {} deliveries of {total} events: {indices:?}; first pull {first:?}, second {second:?}",
            indices.len()
        );
    }
}
