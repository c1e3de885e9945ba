//! Criterion benchmark of the codec on detector-like frames:
//! MessagePack alone (baseline), LZ4, and shuffle + LZ4.
//!
//! `cargo bench -p lclstream-nats --bench codec`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{self, Batch, Compression, DecodeLimits, EncodeOptions};

fn detector_batch() -> Batch {
    let model = DetectorModel::default();
    let events = (0..8).map(|i| model.event("jungfrau", i, i)).collect();
    Batch::new("bench", 1, "jungfrau", events).expect("valid batch")
}

fn codec(c: &mut Criterion) {
    let batch = detector_batch();
    let bytes = batch.payload_bytes() as u64;
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(20);
    for (name, compression, shuffle) in [
        ("msgpack", Compression::None, false),
        ("lz4", Compression::Lz4, false),
        ("shuffle_lz4", Compression::Lz4, true),
    ] {
        let options = EncodeOptions {
            compression,
            shuffle,
            max_payload: 256 << 20,
        };
        let encoded = wire::encode(batch.clone(), &options).expect("encodes");
        eprintln!(
            "{name}: {} event bytes -> {} payload bytes, ratio {:.2}",
            bytes,
            encoded.wire_size,
            bytes as f64 / encoded.wire_size as f64
        );
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| wire::encode(batch.clone(), &options).expect("encodes"))
        });
        let message = encoded.messages[0].clone();
        let limits = DecodeLimits::default();
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| {
                wire::decode(Some(&message.headers), &message.payload, &limits).expect("decodes")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
