//! A Python consumer (nats-py + msgpack + lz4 + numpy only) decodes batches
//! published by Rust, with every array filter (bitshuffled detector frames
//! with read noise, a bitshuffled u8 mask whose length is not a multiple of
//! 8, an empty array, a byte-shuffled float waveform, an unfiltered field)
//! and a chunked event.
//!
//! Needs `python3` with `nats-py msgpack lz4 numpy` (installed by `.ci/run`).
//! Set `LCLSTREAM_SKIP_PYTHON=1` to skip on a machine without them.

use std::path::Path;

use async_nats::jetstream;
use lclstream_nats::server::NatsServer;
use lclstream_nats::streams::{pull_consumer_config, PullLimits, StartPosition, StreamSettings};
use lclstream_nats::subjects::DataSubject;
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{self, Array, Batch, DType, EncodeOptions, Event, Filter, Scalar};
use serde_json::Value;

fn batches() -> Vec<Batch> {
    let model = DetectorModel {
        height: 64,
        width: 96,
        ..Default::default()
    };
    let mut small: Vec<Event> = (0..5)
        .map(|i| model.event("jungfrau", i, 1_000 + i))
        .collect();
    for event in &mut small {
        let waveform: Vec<f32> = (0..50)
            .map(|t| (t as f32 * 0.25).sin() * event.index as f32)
            .collect();
        event.arrays.insert(
            "waveform".into(),
            Array::from_f32(vec![50], &waveform).unwrap(),
        );
        let peaks: Vec<u8> = (0..12i32).flat_map(|p| (p - 6).to_le_bytes()).collect();
        event.arrays.insert(
            "peaks".into(),
            Array::new(DType::I32, vec![3, 4], peaks).unwrap(),
        );
        let mask: Vec<u8> = (0..15u8).map(|p| (p * 17) ^ event.index as u8).collect();
        event.arrays.insert(
            "mask".into(),
            Array::new(DType::U8, vec![3, 5], mask).unwrap(),
        );
        event.arrays.insert(
            "empty".into(),
            Array::new(DType::I32, vec![0, 4], Vec::new()).unwrap(),
        );
        event.scalars.insert(
            "label".into(),
            Scalar::Text(format!("shot-{}", event.index)),
        );
        event
            .scalars
            .insert("hit".into(), Scalar::Bool(event.index % 2 == 0));
    }
    // A frame too large for one message: it travels as chunks.
    let big = DetectorModel {
        height: 1024,
        width: 1024,
        photon_density: 0.5,
        ..Default::default()
    };
    vec![
        Batch::new("mfxp1234", 9, "jungfrau", small).unwrap(),
        Batch::new(
            "mfxp1234",
            9,
            "jungfrau",
            vec![big.event("jungfrau", 5, 2_000)],
        )
        .unwrap(),
    ]
}

fn summarize(batch: &Batch) -> Value {
    let events: Vec<Value> = batch
        .events
        .iter()
        .map(|e| {
            let arrays: serde_json::Map<String, Value> = e
                .arrays
                .iter()
                .map(|(name, a)| {
                    let sum: i64 = match a.dtype {
                        DType::U16 => a.to_u16().unwrap().iter().map(|&v| v as i64).sum(),
                        DType::U8 => a.data.iter().map(|&v| v as i64).sum(),
                        DType::I32 => a.data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).sum(),
                        // numpy's astype(int64) truncates toward zero, like `as`.
                        DType::F32 => a.data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as i64).sum(),
                        other => panic!("unexpected dtype {other}"),
                    };
                    let value = serde_json::json!({"dtype": a.dtype.numpy_name(), "shape": a.shape, "sum": sum});
                    (name.clone(), value)
                })
                .collect();
            serde_json::json!({"index": e.index, "scalars": e.scalars, "arrays": arrays})
        })
        .collect();
    serde_json::json!({"id": batch.id(), "run": batch.run, "first": batch.first, "last": batch.last, "events": events})
}

#[tokio::test]
async fn python_decodes_what_rust_publishes() {
    if std::env::var_os("LCLSTREAM_SKIP_PYTHON").is_some() {
        eprintln!("skipped: LCLSTREAM_SKIP_PYTHON is set");
        return;
    }
    let server = NatsServer::start_default().expect("nats-server starts");
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = js
        .get_or_create_stream(StreamSettings::for_instrument("mfx").to_config())
        .await
        .unwrap();
    let subject = DataSubject::new("mfx", "mfxp1234", 9, "jungfrau").unwrap();
    // The default policy (bitshuffle for integers, byte shuffle for floats)
    // with one field sent unfiltered.
    let mut options = EncodeOptions {
        max_payload: 512 * 1024,
        ..Default::default()
    };
    options.filters.fields.insert("peaks".into(), Filter::None);
    let first = wire::encode(batches()[0].clone(), &options).unwrap();
    let raw = lz4_flex::decompress_size_prepended(&first.messages[0].payload).unwrap();
    let on_wire: Batch = rmp_serde::from_slice(&raw).unwrap();
    let filters: Vec<(&str, Filter)> = on_wire.events[0]
        .arrays
        .iter()
        .map(|(name, a)| (name.as_str(), a.filter))
        .collect();
    assert_eq!(
        filters,
        [
            ("empty", Filter::Bitshuffle),
            ("jungfrau", Filter::Bitshuffle),
            ("mask", Filter::Bitshuffle),
            ("peaks", Filter::None),
            ("waveform", Filter::Shuffle),
        ]
    );
    let mut messages = 0;
    let batches = batches();
    for batch in &batches {
        for message in wire::encode(batch.clone(), &options).unwrap().messages {
            js.publish_with_headers(subject.to_string(), message.headers, message.payload)
                .await
                .unwrap()
                .await
                .unwrap();
            messages += 1;
        }
    }
    assert!(messages > 2, "the large frame is chunked");
    let config = pull_consumer_config(
        "py",
        vec![subject.to_string()],
        &StartPosition::All,
        &PullLimits::default(),
    );
    stream.create_consumer(config).await.unwrap();

    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .current_dir(&script_dir)
            .arg("decode_stream.py")
            .args([
                server.url(),
                stream.cached_info().config.name.clone(),
                "py".into(),
                messages.to_string(),
            ])
            .output(),
    )
    .await
    .expect("python finishes")
    .expect("python3 runs");
    assert!(
        output.status.success(),
        "python failed (install: pip install nats-py msgpack lz4 numpy):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let decoded: Value = serde_json::from_slice(&output.stdout).expect("JSON summary");
    let expected: Value = batches.iter().map(summarize).collect::<Vec<_>>().into();
    assert_eq!(decoded, expected);
}
