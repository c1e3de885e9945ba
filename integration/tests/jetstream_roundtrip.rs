//! A batch published into JetStream on a real nats-server comes back byte-identical.

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use lclstream_nats::server::NatsServer;
use lclstream_nats::streams::{pull_consumer_config, PullLimits, StartPosition, StreamSettings};
use lclstream_nats::subjects::DataSubject;
use lclstream_nats::wire::{
    self, headers as h, Array, Batch, DecodeLimits, EncodeOptions, Event, Reassembler, Scalar,
};

fn detector_batch(first: u64, count: u64, side: u64) -> Batch {
    let events = (first..first + count)
        .map(|index| {
            // Pseudo-random pixels: large frames stay large after compression.
            let mut state = 0x9e37_79b9u32 ^ index as u32;
            let pixels: Vec<u16> = (0..side * side)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state % 4096) as u16
                })
                .collect();
            let mut event = Event {
                index,
                time_ns: 1_000 + index,
                ..Default::default()
            };
            event.scalars.insert(
                "photon_energy_ev".into(),
                Scalar::Float(9500.0 + index as f64),
            );
            event.arrays.insert(
                "jungfrau".into(),
                Array::from_u16(vec![side, side], &pixels).unwrap(),
            );
            event
        })
        .collect();
    Batch::new("mfxp1234", 3, "jungfrau", events).unwrap()
}

#[tokio::test]
async fn batch_round_trips_through_jetstream() {
    let server = NatsServer::start_default().expect("nats-server starts");
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let settings = StreamSettings::for_instrument("mfx");
    let stream = js.get_or_create_stream(settings.to_config()).await.unwrap();
    let subject = DataSubject::new("mfx", "mfxp1234", 3, "jungfrau").unwrap();

    // One normal batch, one oversized event split into chunks.
    let small = detector_batch(0, 4, 64);
    let big = detector_batch(4, 1, 1500);
    let options = EncodeOptions {
        max_payload: 1024 * 1024,
        ..Default::default()
    };
    let mut sent = Vec::new();
    for batch in [small.clone(), big.clone()] {
        let encoded = wire::encode(batch, &options).unwrap();
        for message in encoded.messages {
            let ack = js
                .publish_with_headers(
                    subject.to_string(),
                    message.headers.clone(),
                    message.payload.clone(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(!ack.duplicate);
            sent.push(message);
        }
    }
    assert!(sent.len() > 2, "the big event was chunked");
    // Republishing the same ids is deduplicated.
    let again = js
        .publish_with_headers(
            subject.to_string(),
            sent[0].headers.clone(),
            sent[0].payload.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(again.duplicate);

    let config = pull_consumer_config(
        "roundtrip",
        vec![subject.to_string()],
        &StartPosition::All,
        &PullLimits::default(),
    );
    let consumer = stream.create_consumer(config).await.unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut reassembler = Reassembler::default();
    let mut batches = Vec::new();
    for expected in &sent {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("message arrives")
            .unwrap()
            .unwrap();
        assert_eq!(message.payload, expected.payload, "payload byte-identical");
        let headers = message.headers.clone().unwrap();
        assert_eq!(
            h::get(&headers, h::CHECKSUM),
            h::get(&expected.headers, h::CHECKSUM)
        );
        if let Some(whole) = reassembler.push(&headers, message.payload.clone()).unwrap() {
            batches.push(
                wire::decode(
                    Some(&whole.headers),
                    &whole.payload,
                    &DecodeLimits::default(),
                )
                .unwrap(),
            );
        }
        message.ack().await.unwrap();
    }
    assert_eq!(batches, vec![small, big]);
}
