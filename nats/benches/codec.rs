//! Criterion benchmark of the codec on two synthetic detector models
//! (realistic ADU frames with read noise; photon counts): MessagePack alone
//! (baseline), LZ4, byte shuffle + LZ4 and bitshuffle + LZ4, plus the
//! bitshuffle transform alone.
//!
//! `cargo bench -p lclstream-nats --bench codec`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{
    self, bitshuffle, Batch, Compression, DecodeLimits, EncodeOptions, Filter, FilterPolicy,
};

fn detector_batch(model: &DetectorModel) -> Batch {
    let events = (0..8).map(|i| model.event("jungfrau", i, i)).collect();
    Batch::new("bench", 1, "jungfrau", events).expect("valid batch")
}

fn codec(c: &mut Criterion) {
    for (label, model) in [
        ("realistic", DetectorModel::default()),
        ("photon_counts", DetectorModel::photon_counts()),
    ] {
        let batch = detector_batch(&model);
        let bytes = batch.payload_bytes() as u64;
        let mut group = c.benchmark_group(format!("codec/{label}"));
        group.throughput(Throughput::Bytes(bytes));
        group.sample_size(20);
        eprintln!("data model {label}: {}", model.describe());
        for (name, compression, filter) in [
            ("msgpack", Compression::None, Filter::None),
            ("lz4", Compression::Lz4, Filter::None),
            ("shuffle_lz4", Compression::Lz4, Filter::Shuffle),
            ("bitshuffle_lz4", Compression::Lz4, Filter::Bitshuffle),
        ] {
            let options = EncodeOptions {
                compression,
                filters: FilterPolicy::uniform(filter),
                max_payload: 256 << 20,
            };
            let encoded = wire::encode(batch.clone(), &options).expect("encodes");
            eprintln!(
                "{label} {name}: {} event bytes -> {} payload bytes, ratio {:.2}",
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
                    wire::decode(Some(&message.headers), &message.payload, &limits)
                        .expect("decodes")
                })
            });
        }
        group.finish();
        let frame = &batch.events[0].arrays["jungfrau"].data;
        let shuffled = bitshuffle::bitshuffle(frame, 2).expect("whole elements");
        let mut group = c.benchmark_group(format!("bitshuffle/{label}"));
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function("transform", |b| {
            b.iter(|| bitshuffle::bitshuffle(frame, 2).expect("whole elements"))
        });
        group.bench_function("inverse", |b| {
            b.iter(|| bitshuffle::bitunshuffle(&shuffled, 2).expect("whole elements"))
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
