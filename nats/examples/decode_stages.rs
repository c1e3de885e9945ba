//! Where decoding time goes: each stage of `wire::decode` alone on a batch of
//! 8 synthetic 512x1024 u16 frames (realistic and photon-count models), in
//! GB/s of event data, with the allocator the `lclstream` binary uses.
//!
//! `cargo run --release -p lclstream-nats --example decode_stages`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{self, Batch, DecodeLimits, EncodeOptions};

fn main() {
    for (label, model) in [
        ("realistic", DetectorModel::default()),
        ("photon counts", DetectorModel::photon_counts()),
    ] {
        let events: Vec<_> = (0..8).map(|i| model.event("det", i, i)).collect();
        let batch = Batch::new("e", 1, "det", events).unwrap();
        let bytes = batch.payload_bytes() as f64;
        let plain = std::env::args().any(|a| a == "--plain");
        let options = if plain {
            EncodeOptions {
                filters: wire::FilterPolicy::none(),
                ..Default::default()
            }
        } else {
            EncodeOptions::default()
        };
        let encoded = wire::encode(batch.clone(), &options).unwrap();
        let message = &encoded.messages[0];
        let n = 40;
        let time = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            bytes * n as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        let raw = lz4_flex::decompress_size_prepended(&message.payload).unwrap();
        let lz4 = time(&mut || {
            std::hint::black_box(lz4_flex::decompress_size_prepended(&message.payload).unwrap());
        });
        let ours = time(&mut || {
            std::hint::black_box(wire::lz4::decompress(&message.payload[4..], raw.len()).unwrap());
        });
        let crc = time(&mut || {
            std::hint::black_box(crc32fast::hash(&raw));
        });
        let msgpack = time(&mut || {
            std::hint::black_box(rmp_serde::from_slice::<Batch>(&raw).unwrap());
        });
        let filtered: Batch = rmp_serde::from_slice(&raw).unwrap();
        let unfilter = time(&mut || {
            let mut b = filtered.clone();
            b.remove_filters().unwrap();
            std::hint::black_box(b);
        });
        let clone = time(&mut || {
            std::hint::black_box(filtered.clone());
        });
        let limits = DecodeLimits::default();
        let full = time(&mut || {
            std::hint::black_box(
                wire::decode(Some(&message.headers), &message.payload, &limits).unwrap(),
            );
        });
        println!(
            "{label}: lz4_flex {lz4:.2} GB/s, wire::lz4 {ours:.2}, crc {crc:.2}, msgpack {msgpack:.2}, clone {clone:.2}, clone+unfilter {unfilter:.2}, decode {full:.2}"
        );
    }
}
