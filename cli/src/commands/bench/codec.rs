//! `lclstream bench codec`: encode/decode speed and compression ratio of the
//! wire format on detector-like frames, plain LZ4 against shuffle + LZ4, with
//! MessagePack alone (no compression) as the baseline of the same run.

use std::time::{Duration, Instant};

use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{self, Batch, Compression, DecodeLimits, EncodeOptions};

/// Arguments of `lclstream bench codec`.
#[derive(clap::Args)]
pub struct CodecArgs {
    /// Frame height in pixels.
    #[arg(long, default_value_t = 512)]
    pub height: u64,
    /// Frame width in pixels.
    #[arg(long, default_value_t = 1024)]
    pub width: u64,
    /// Fraction of pixels hit by photons.
    #[arg(long, default_value_t = 0.02)]
    pub photon_density: f64,
    /// Events per batch.
    #[arg(long, default_value_t = 8)]
    pub batch_events: u64,
    /// Distinct batches cycled through (different frames defeat caches).
    #[arg(long, default_value_t = 4)]
    pub batches: u64,
    /// Seconds spent measuring each figure.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
}

/// One measured codec configuration.
#[derive(Debug, Clone)]
pub struct CodecFigures {
    /// Configuration name.
    pub name: &'static str,
    /// Uncompressed event bytes encoded per second, in MB/s.
    pub encode_mb_s: f64,
    /// Uncompressed event bytes decoded per second, in MB/s.
    pub decode_mb_s: f64,
    /// Event data bytes divided by payload bytes.
    pub ratio: f64,
}

/// Runs the codec benchmark and prints a table.
pub async fn run(args: CodecArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let figures = measure(&args)?;
        println!(
            "codec on {}x{} u16 frames, photon density {}, {} events per batch",
            args.height, args.width, args.photon_density, args.batch_events
        );
        println!(
            "{:<22} {:>12} {:>12} {:>8}",
            "configuration", "encode MB/s", "decode MB/s", "ratio"
        );
        for f in &figures {
            println!(
                "{:<22} {:>12.0} {:>12.0} {:>8.2}",
                f.name, f.encode_mb_s, f.decode_mb_s, f.ratio
            );
        }
        let plain = &figures[1];
        let shuffled = &figures[2];
        println!(
            "shuffle gain: ratio x{:.2}, encode speed x{:.2}, decode speed x{:.2} (vs plain LZ4)",
            shuffled.ratio / plain.ratio,
            shuffled.encode_mb_s / plain.encode_mb_s,
            shuffled.decode_mb_s / plain.decode_mb_s
        );
        Ok(())
    })
    .await?
}

/// Measures MessagePack only, LZ4, and shuffle + LZ4.
pub fn measure(args: &CodecArgs) -> anyhow::Result<Vec<CodecFigures>> {
    let model = DetectorModel {
        height: args.height,
        width: args.width,
        photon_density: args.photon_density,
        ..Default::default()
    };
    let batches: Vec<Batch> = (0..args.batches)
        .map(|b| {
            let events = (0..args.batch_events)
                .map(|i| {
                    let index = b * args.batch_events + i;
                    model.event("jungfrau", index, index)
                })
                .collect();
            Batch::new("bench", 1, "jungfrau", events)
        })
        .collect::<Result<_, _>>()?;
    let configurations = [
        ("msgpack (baseline)", Compression::None, false),
        ("lz4", Compression::Lz4, false),
        ("shuffle+lz4", Compression::Lz4, true),
    ];
    let budget = Duration::from_secs_f64(args.seconds.max(0.05));
    configurations
        .into_iter()
        .map(|(name, compression, shuffle)| {
            let options = EncodeOptions {
                compression,
                shuffle,
                max_payload: 256 * 1024 * 1024,
            };
            measure_one(name, &batches, &options, budget)
        })
        .collect()
}

fn measure_one(
    name: &'static str,
    batches: &[Batch],
    options: &EncodeOptions,
    budget: Duration,
) -> anyhow::Result<CodecFigures> {
    let data_bytes: usize = batches.iter().map(Batch::payload_bytes).sum();
    let (mut rounds, start) = (0u32, Instant::now());
    let mut encoded = Vec::new();
    while rounds == 0 || start.elapsed() < budget {
        encoded.clear();
        for batch in batches {
            // The clone is part of what an agent pays too: it owns its batches.
            encoded.push(wire::encode(batch.clone(), options)?);
        }
        rounds += 1;
    }
    let encode_mb_s = (data_bytes as f64 * rounds as f64) / start.elapsed().as_secs_f64() / 1e6;
    let wire_bytes: usize = encoded.iter().map(|e| e.wire_size).sum();
    let limits = DecodeLimits::default();
    let (mut rounds, start) = (0u32, Instant::now());
    while rounds == 0 || start.elapsed() < budget {
        for (e, original) in encoded.iter().zip(batches) {
            let message = &e.messages[0];
            let batch = wire::decode(Some(&message.headers), &message.payload, &limits)?;
            anyhow::ensure!(batch.count == original.count, "decoded batch differs");
        }
        rounds += 1;
    }
    let decode_mb_s = (data_bytes as f64 * rounds as f64) / start.elapsed().as_secs_f64() / 1e6;
    Ok(CodecFigures {
        name,
        encode_mb_s,
        decode_mb_s,
        ratio: data_bytes as f64 / wire_bytes as f64,
    })
}
