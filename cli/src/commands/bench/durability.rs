//! Durability: what `jetstream { sync_interval: always }` (fsync before each
//! acknowledgement, the default of `lclstream init` and of edge and facility
//! servers in topologies) costs against the server's default (fsync every
//! 2 minutes), in the same run, on the same pre-encoded synthetic detector
//! batches: pipelined publishing (64 acks in flight, as the agent does) and
//! one-at-a-time publish-and-wait ack latency.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use futures::stream::{FuturesOrdered, StreamExt};
use lclstream_nats::server::NatsServer;
use lclstream_nats::streams::StreamSettings;
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{self, Batch, EncodeOptions, WireMessage};

/// Arguments of `lclstream bench durability`.
#[derive(clap::Args)]
pub struct DurabilityBenchArgs {
    /// Events (512 x 512 u16 synthetic detector frames), 16 per batch.
    #[arg(long, default_value_t = 3200)]
    pub events: u64,
    /// Messages published one at a time for the ack latency.
    #[arg(long, default_value_t = 200)]
    pub latency_messages: usize,
    /// Acknowledgements in flight while pipelining.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
}

const BATCH_EVENTS: u64 = 16;

fn messages(events: u64) -> anyhow::Result<(Vec<WireMessage>, u64)> {
    let model = DetectorModel {
        height: 512,
        width: 512,
        ..Default::default()
    };
    let options = EncodeOptions {
        max_payload: 8 * 1024 * 1024,
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut wire_bytes = 0;
    let mut index = 0;
    while index < events {
        let n = BATCH_EVENTS.min(events - index);
        let batch: Vec<_> = (index..index + n)
            .map(|i| model.event("detector", i, i * 8_333_333))
            .collect();
        let encoded = wire::encode(Batch::new("durability", 1, "detector", batch)?, &options)?;
        wire_bytes += encoded.wire_size as u64;
        out.extend(encoded.messages);
        index += n;
    }
    Ok((out, wire_bytes))
}

struct Figures {
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn measure(
    sync_interval: Option<&str>,
    messages: &[WireMessage],
    args: &DurabilityBenchArgs,
) -> anyhow::Result<Figures> {
    let interval = sync_interval.map(str::to_string);
    let server = tokio::task::spawn_blocking(move || {
        NatsServer::start_with(|config| {
            if let Some(js) = config.jetstream.as_mut() {
                js.sync_interval = interval.clone();
            }
        })
    })
    .await??;
    let client = async_nats::connect(server.url())
        .await
        .with_context(|| format!("connecting to {}", server.url()))?;
    let js = jetstream::new(client);
    js.get_or_create_stream(StreamSettings::for_instrument("bench").to_config())
        .await?;
    let subject = "lcls.bench.durability.1.detector";

    let started = Instant::now();
    let mut pending = FuturesOrdered::new();
    for m in messages {
        if pending.len() >= args.in_flight.max(1) {
            let ack: Option<Result<_, _>> = pending.next().await;
            ack.context("ack")??;
        }
        let ack = js
            .publish_with_headers(subject, m.headers.clone(), m.payload.clone())
            .await?;
        pending.push_back(ack.into_future());
    }
    while let Some(ack) = pending.next().await {
        ack?;
    }
    let seconds = started.elapsed().as_secs_f64();

    let mut latencies = Vec::with_capacity(args.latency_messages);
    for (i, m) in messages
        .iter()
        .cycle()
        .take(args.latency_messages)
        .enumerate()
    {
        let mut headers = m.headers.clone();
        headers.insert("Nats-Msg-Id", format!("latency-{i}").as_str());
        let sent = Instant::now();
        js.publish_with_headers(subject, headers, m.payload.clone())
            .await?
            .await?;
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let at = |q: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            * 1000.0
    };
    Ok(Figures {
        seconds,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    })
}

/// Runs `lclstream bench durability`.
pub async fn run(args: DurabilityBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    anyhow::ensure!(
        args.events <= 100_000 && args.latency_messages <= 10_000,
        "--events at most 100000, --latency-messages at most 10000 (keep the run bounded)"
    );
    let (messages, wire_bytes) = messages(args.events)?;
    println!(
        "durability benchmark: {} events (512x512 u16), {} messages, {:.1} MB on the wire, {} in flight",
        args.events,
        messages.len(),
        wire_bytes as f64 / 1e6,
        args.in_flight
    );
    let default = measure(None, &messages, &args).await?;
    let always = measure(Some("always"), &messages, &args).await?;
    for (name, f) in [
        ("sync_interval default (2 min)", &default),
        ("sync_interval always", &always),
    ] {
        println!(
            "{name:<30} {:>8.0} ev/s {:>8.1} MB/s wire   ack latency p50 {:>6.2} ms  p99 {:>6.2} ms",
            args.events as f64 / f.seconds,
            wire_bytes as f64 / 1e6 / f.seconds,
            f.p50_ms,
            f.p99_ms
        );
    }
    println!(
        "  ratio always/default throughput: {:.0}%   ack latency p50 x{:.1}",
        100.0 * default.seconds / always.seconds,
        always.p50_ms / default.p50_ms.max(1e-6)
    );
    Ok(())
}
