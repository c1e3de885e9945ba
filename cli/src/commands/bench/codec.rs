//! `lclstream bench codec`: encode/decode speed (one core) and compression
//! ratio of the wire format on two synthetic detector models, realistic ADU
//! frames with read noise and photon-count frames. Rows: MessagePack alone
//! (no compression, the baseline of the same run), plain LZ4, byte shuffle +
//! LZ4 and bitshuffle + LZ4; then the codec targets against those baselines.
//! Two comparison rows compress the bitshuffled payload with zstd instead of
//! LZ4 (levels 1 and 3): zstd is not part of the wire format, the rows show
//! what it would buy and cost on the same batches.

use std::time::{Duration, Instant};

use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{
    self, Batch, Compression, DecodeLimits, EncodeOptions, Filter, FilterPolicy,
};

/// Arguments of `lclstream bench codec`.
#[derive(clap::Args)]
pub struct CodecArgs {
    /// Frame height in pixels.
    #[arg(long, default_value_t = 512)]
    pub height: u64,
    /// Frame width in pixels.
    #[arg(long, default_value_t = 1024)]
    pub width: u64,
    /// Mean photons per pixel of the ADU model (the photon-count model uses 0.05).
    #[arg(long, default_value_t = 0.02)]
    pub photon_density: f64,
    /// Read noise of the ADU model, standard deviation in ADU.
    #[arg(long, default_value_t = 3.0)]
    pub read_noise: f64,
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
    /// Uncompressed event bytes encoded per second on one core, in GB/s.
    pub encode_gb_s: f64,
    /// Uncompressed event bytes decoded per second on one core, in GB/s.
    pub decode_gb_s: f64,
    /// Event data bytes divided by payload bytes.
    pub ratio: f64,
}

/// The configurations measured, in table order.
const CONFIGURATIONS: [(&str, Compression, Filter); 4] = [
    ("msgpack (baseline)", Compression::None, Filter::None),
    ("lz4", Compression::Lz4, Filter::None),
    ("shuffle+lz4", Compression::Lz4, Filter::Shuffle),
    ("bitshuffle+lz4", Compression::Lz4, Filter::Bitshuffle),
];

/// Runs the codec benchmark and prints one table per data model.
pub async fn run(args: CodecArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let realistic = DetectorModel {
            height: args.height,
            width: args.width,
            photon_density: args.photon_density,
            read_noise: args.read_noise,
            ..Default::default()
        };
        let counts = DetectorModel {
            height: args.height,
            width: args.width,
            ..DetectorModel::photon_counts()
        };
        for (label, model) in [("realistic", &realistic), ("photon counts", &counts)] {
            let figures = measure(&args, model)?;
            println!(
                "codec, data model {label}: {}; {} events per batch, one core",
                model.describe(),
                args.batch_events
            );
            print_table(&figures);
            print_targets(&figures);
            println!();
        }
        Ok(())
    })
    .await?
}

fn print_table(figures: &[CodecFigures]) {
    println!(
        "{:<20} {:>12} {:>12} {:>8}",
        "configuration", "encode GB/s", "decode GB/s", "ratio"
    );
    for f in figures {
        println!(
            "{:<20} {:>12.2} {:>12.2} {:>8.2}",
            f.name, f.encode_gb_s, f.decode_gb_s, f.ratio
        );
    }
}

/// The codec targets: bitshuffle + LZ4 against the same run's other rows.
fn print_targets(figures: &[CodecFigures]) {
    let [_, plain, shuffled, bits, zstd_rows @ ..] = figures else {
        return;
    };
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let vs_shuffle = bits.ratio / shuffled.ratio;
    let vs_plain = bits.ratio / plain.ratio;
    println!(
        "bitshuffle+lz4 ratio x{vs_shuffle:.2} of shuffle+lz4 (target >= 1.3: {}), x{vs_plain:.2} of lz4 (target >= 1.8: {})",
        verdict(vs_shuffle >= 1.3),
        verdict(vs_plain >= 1.8)
    );
    println!(
        "bitshuffle+lz4 encode {:.2} GB/s (target >= 1: {}), decode {:.2} GB/s (target >= 1.5: {}); plain lz4 encode {:.2}, decode {:.2}",
        bits.encode_gb_s,
        verdict(bits.encode_gb_s >= 1.0),
        bits.decode_gb_s,
        verdict(bits.decode_gb_s >= 1.5),
        plain.encode_gb_s,
        plain.decode_gb_s
    );
    for z in zstd_rows {
        println!(
            "* comparison, not in the wire format: {} ratio x{:.2} of bitshuffle+lz4, encode x{:.2}, decode x{:.2} of its speed",
            z.name.trim_end_matches(" *"),
            z.ratio / bits.ratio,
            z.encode_gb_s / bits.encode_gb_s,
            z.decode_gb_s / bits.decode_gb_s
        );
    }
}

/// Measures every configuration on batches of `model` frames.
pub fn measure(args: &CodecArgs, model: &DetectorModel) -> anyhow::Result<Vec<CodecFigures>> {
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
    let budget = Duration::from_secs_f64(args.seconds.max(0.05));
    let mut figures = CONFIGURATIONS
        .into_iter()
        .map(|(name, compression, filter)| {
            let options = EncodeOptions {
                compression,
                filters: FilterPolicy::uniform(filter),
                max_payload: 256 * 1024 * 1024,
            };
            measure_one(name, &batches, &options, budget)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (name, level) in ZSTD_COMPARISONS {
        figures.push(measure_zstd(name, level, &batches, budget)?);
    }
    Ok(figures)
}

/// Comparison rows: bitshuffled MessagePack compressed by zstd at a level.
const ZSTD_COMPARISONS: [(&str, i32); 2] = [("bitshuffle+zstd-1 *", 1), ("bitshuffle+zstd-3 *", 3)];

/// Bitshuffle with zstd in place of LZ4: the wire encoder writes the
/// bitshuffled batch uncompressed, zstd compresses that payload; decoding
/// reverses both.
fn measure_zstd(
    name: &'static str,
    level: i32,
    batches: &[Batch],
    budget: Duration,
) -> anyhow::Result<CodecFigures> {
    let options = EncodeOptions {
        compression: Compression::None,
        filters: FilterPolicy::uniform(Filter::Bitshuffle),
        max_payload: 256 * 1024 * 1024,
    };
    let limits = DecodeLimits::default();
    measure_codec(
        name,
        batches,
        budget,
        |batch| {
            let message = wire::encode(batch.clone(), &options)?.messages.remove(0);
            let compressed = zstd::bulk::compress(&message.payload, level)?;
            Ok((message, compressed))
        },
        |(_, compressed)| compressed.len(),
        |(message, compressed)| {
            let payload = zstd::bulk::decompress(compressed, message.payload.len())?;
            Ok(wire::decode(Some(&message.headers), &payload, &limits)?)
        },
    )
}

/// One configuration of the wire format itself.
fn measure_one(
    name: &'static str,
    batches: &[Batch],
    options: &EncodeOptions,
    budget: Duration,
) -> anyhow::Result<CodecFigures> {
    let limits = DecodeLimits::default();
    measure_codec(
        name,
        batches,
        budget,
        // The clone is part of what an agent pays too: it owns its batches.
        |batch| Ok(wire::encode(batch.clone(), options)?),
        |encoded| encoded.wire_size,
        |encoded| {
            let message = &encoded.messages[0];
            Ok(wire::decode(
                Some(&message.headers),
                &message.payload,
                &limits,
            )?)
        },
    )
}

/// Times `encode` over every batch for `budget`, checks that `decode` gives
/// each batch back, then times `decode`; GB/s count uncompressed event bytes
/// and the ratio is event bytes over `size` of the encoded form.
fn measure_codec<E>(
    name: &'static str,
    batches: &[Batch],
    budget: Duration,
    encode: impl Fn(&Batch) -> anyhow::Result<E>,
    size: impl Fn(&E) -> usize,
    decode: impl Fn(&E) -> anyhow::Result<Batch>,
) -> anyhow::Result<CodecFigures> {
    let data_bytes: usize = batches.iter().map(Batch::payload_bytes).sum();
    let mut encoded = Vec::new();
    let encode_gb_s = gb_per_second(data_bytes, budget, || {
        encoded.clear();
        for batch in batches {
            encoded.push(encode(batch)?);
        }
        Ok(())
    })?;
    let wire_bytes: usize = encoded.iter().map(&size).sum();
    for (e, original) in encoded.iter().zip(batches) {
        anyhow::ensure!(&decode(e)? == original, "{name}: decoded batch differs");
    }
    let decode_gb_s = gb_per_second(data_bytes, budget, || {
        for e in &encoded {
            std::hint::black_box(decode(e)?);
        }
        Ok(())
    })?;
    Ok(CodecFigures {
        name,
        encode_gb_s,
        decode_gb_s,
        ratio: data_bytes as f64 / wire_bytes as f64,
    })
}

/// Runs `round` (which handles `bytes` of event data) at least once and
/// until `budget` has passed; GB/s over all rounds.
fn gb_per_second(
    bytes: usize,
    budget: Duration,
    mut round: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let (mut rounds, start) = (0u32, Instant::now());
    while rounds == 0 || start.elapsed() < budget {
        round()?;
        rounds += 1;
    }
    Ok((bytes as f64 * rounds as f64) / start.elapsed().as_secs_f64() / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row round-trips (`measure` checks each decoded batch) and has
    /// figures; bitshuffle + zstd compresses at least as well as + LZ4.
    #[test]
    fn every_configuration_round_trips_on_a_small_batch() {
        let args = CodecArgs {
            height: 32,
            width: 48,
            photon_density: 0.02,
            read_noise: 3.0,
            batch_events: 3,
            batches: 2,
            seconds: 0.01,
        };
        let model = DetectorModel {
            height: args.height,
            width: args.width,
            ..Default::default()
        };
        let figures = measure(&args, &model).expect("measured");
        let names: Vec<&str> = figures.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "msgpack (baseline)",
                "lz4",
                "shuffle+lz4",
                "bitshuffle+lz4",
                "bitshuffle+zstd-1 *",
                "bitshuffle+zstd-3 *"
            ]
        );
        for f in &figures {
            assert!(
                f.ratio > 0.0 && f.encode_gb_s > 0.0 && f.decode_gb_s > 0.0,
                "{f:?}"
            );
        }
        assert!(figures[5].ratio >= figures[3].ratio, "{figures:?}");
    }
}
