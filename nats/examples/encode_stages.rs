//! Where encoding time goes: each stage of `wire::encode` alone on a batch of
//! 16 synthetic 512x512 u16 frames, in GB/s of event data, with the
//! allocator the `lclstream` binary uses.
//!
//! `cargo run --release -p lclstream-nats --example encode_stages`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{self, Batch, EncodeOptions};
use std::time::Instant;
fn main() {
    let model = DetectorModel {
        height: 512,
        width: 512,
        ..Default::default()
    };
    let events: Vec<_> = (0..16).map(|i| model.event("det", i, i)).collect();
    let batch = Batch::new("e", 1, "det", events).unwrap();
    let bytes = batch.payload_bytes() as f64;
    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        let mut b = batch.clone();
        b.shuffle_integer_arrays();
        std::hint::black_box(b);
    }
    let shuffle_clone = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(batch.clone());
    }
    let clone = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut raw = Vec::new();
    for _ in 0..n {
        raw = rmp_serde::to_vec_named(&batch).unwrap();
    }
    let mp = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(crc32fast::hash(&raw));
    }
    let crc = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(lz4_flex::compress_prepend_size(&raw));
    }
    let lz = t.elapsed().as_secs_f64();
    let mut sb = batch.clone();
    sb.shuffle_integer_arrays();
    let sraw = rmp_serde::to_vec_named(&sb).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(lz4_flex::compress_prepend_size(&sraw));
    }
    let lzs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(
            wire::encode(
                batch.clone(),
                &EncodeOptions {
                    filters: wire::FilterPolicy::none(),
                    ..Default::default()
                },
            )
            .unwrap(),
        );
    }
    let full = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(wire::encode(batch.clone(), &EncodeOptions::default()).unwrap());
    }
    let fulls = t.elapsed().as_secs_f64();
    let gbs = |s: f64| bytes * n as f64 / s / 1e9;
    println!("clone {:.2} GB/s, clone+shuffle {:.2}, msgpack {:.2}, crc {:.2}, lz4 {:.2}, lz4(shuffled) {:.2}, encode {:.2}, encode+shuffle {:.2}", gbs(clone), gbs(shuffle_clone), gbs(mp), gbs(crc), gbs(lz), gbs(lzs), gbs(full), gbs(fulls));
}
