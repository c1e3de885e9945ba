//! `lclstream bench latency`: end-to-end latency from the moment the agent
//! reads (generates) an event to the moment the partner library has decoded
//! it, at fixed event rates, against a raw async-nats publish -> pull of one
//! uncompressed event per message (no spool, no batching) in the same run.
//!
//! Both ends run on one machine, so the event's `time_ns`, stamped at read
//! time, and the partner's clock agree.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use futures::StreamExt;
use lclstream_nats::streams::{pull_consumer_config, PullLimits, StartPosition};
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{
    self, Batch, Compression, DecodeLimits, EncodeOptions, Event, FilterPolicy,
};
use lclstream_partner::{BatchInfo, CallbackSink, PullOptions};

use super::support::{self, AgentBatching};

/// Arguments of `lclstream bench latency`.
#[derive(clap::Args)]
pub struct LatencyBenchArgs {
    /// Seconds of events per case.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Event rates in Hz, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![120.0, 1000.0])]
    pub rates: Vec<f64>,
    /// Agent batch linger settings in ms, comma separated (one agent case each).
    #[arg(long, value_delimiter = ',', default_values_t = vec![5u64, 50])]
    pub lingers: Vec<u64>,
    /// Agent batch.max_events.
    #[arg(long, default_value_t = 16)]
    pub batch_events: usize,
    /// Frame height.
    #[arg(long, default_value_t = 256)]
    pub height: u64,
    /// Frame width.
    #[arg(long, default_value_t = 256)]
    pub width: u64,
    /// Seconds at the start of each case whose events are not counted (connection set-up).
    #[arg(long, default_value_t = 0.5)]
    pub warmup: f64,
    /// fsync every spool append (as in production).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Also run each linger with `batch.low_latency = true` (flush when the
    /// source is idle; the spool's auto sync policy then does not fsync).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub low_latency: bool,
}

/// Latencies of one case, in milliseconds, sorted.
struct Latencies {
    name: String,
    rate: f64,
    batching: String,
    ms: Vec<f64>,
}

impl Latencies {
    fn row(&self) -> String {
        format!(
            "| {} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} |",
            self.name,
            self.rate,
            self.batching,
            self.ms.len(),
            support::percentile(&self.ms, 0.5),
            support::percentile(&self.ms, 0.99),
            self.ms.last().copied().unwrap_or(0.0)
        )
    }
}

/// Events in the first `warmup` seconds at `rate`.
fn warmup_events(rate: f64, warmup: f64) -> u64 {
    (rate * warmup.max(0.0)) as u64
}

fn latency_ms(time_ns: u64) -> f64 {
    support::now_ns().saturating_sub(time_ns) as f64 / 1e6
}

/// Runs the latency benchmark.
pub async fn run(args: LatencyBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.seconds < 3600.0,
        "--seconds must be between 0 and 3600"
    );
    anyhow::ensure!(
        args.rates.iter().all(|r| *r > 0.0 && *r <= 100_000.0),
        "--rates must be between 0 and 100000 Hz"
    );
    anyhow::ensure!(args.batch_events > 0, "--batch-events must be positive");
    let server = support::start_server().await?;
    let url = server.url();
    let js = support::jetstream_with_stream(&url).await?;
    let gateway = support::BenchGateway::start(&url, 8, &PullLimits::default()).await?;
    let client = support::partner(&url).await?;
    let work = tempfile::tempdir()?;
    let described = DetectorModel {
        height: args.height,
        width: args.width,
        ..Default::default()
    }
    .describe();
    println!(
        "latency benchmark: synthetic detector ({described}), {} s per case (the first {} s not \
         counted), agent batch.max_events {}, spool fsync {}, server {url}",
        args.seconds, args.warmup, args.batch_events, args.fsync
    );
    let mut results = Vec::new();
    let mut run = 0u32;
    for &rate in &args.rates {
        let events = ((rate * args.seconds).round() as u64).max(1);
        run += 1;
        results.push(raw_case(&js, run, rate, events, &args).await?);
        let mut cases: Vec<(u64, bool)> = args.lingers.iter().map(|&l| (l, false)).collect();
        if args.low_latency {
            cases.extend(args.lingers.iter().map(|&l| (l, true)));
        }
        for &(linger, low_latency) in &cases {
            run += 1;
            let subject = format!("lcls.bench.bench1.{run}.lat");
            let grant = support::grant(&client, &subject, &format!("lat{run}")).await?;
            let samples = Arc::new(Mutex::new(Vec::with_capacity(events as usize)));
            let warmup = warmup_events(rate, args.warmup);
            let pull = {
                let client = client.clone();
                let samples = samples.clone();
                tokio::spawn(async move {
                    let mut sink = CallbackSink::new(move |_b: &BatchInfo, e: Event| {
                        if e.index >= warmup {
                            let ms = latency_ms(e.time_ns);
                            samples.lock().expect("not poisoned").push(ms);
                        }
                        Ok(())
                    });
                    let options = PullOptions {
                        max_events: Some(events),
                        idle_timeout: Duration::from_secs(30),
                        expires: Duration::from_secs(1),
                        ..Default::default()
                    };
                    client.pull(&grant, &options, &mut sink).await
                })
            };
            let batching = AgentBatching {
                max_events: args.batch_events,
                linger_ms: linger,
                fsync: args.fsync,
                low_latency,
                ..AgentBatching::default()
            };
            let toml = support::agent_toml(
                &url,
                &work.path().join(format!("spool{run}")),
                &batching,
                &support::synthetic_source("lat", run, args.height, args.width, Some(events), rate),
            );
            support::run_agent(&toml, std::future::pending()).await?;
            let summary = support::step("partner pull", pull).await???;
            anyhow::ensure!(
                summary.events == events,
                "partner received {} of {events} events",
                summary.events
            );
            let mut ms = std::mem::take(&mut *samples.lock().expect("not poisoned"));
            ms.sort_by(f64::total_cmp);
            results.push(Latencies {
                name: "agent -> partner library".into(),
                rate,
                batching: format!(
                    "<= {} events, linger {linger} ms{}, shuffle+lz4",
                    args.batch_events,
                    if low_latency {
                        ", low_latency (flush when idle, no fsync)"
                    } else {
                        ""
                    }
                ),
                ms,
            });
        }
    }
    gateway.handle.shutdown().await;

    println!();
    println!("| pipeline | rate Hz | batching | events | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for r in &results {
        println!("{}", r.row());
    }
    println!();
    for &rate in &args.rates {
        let of_rate: Vec<&Latencies> = results.iter().filter(|r| r.rate == rate).collect();
        let Some(raw) = of_rate.first() else { continue };
        let p50 = support::percentile(&raw.ms, 0.5).max(1e-6);
        let ratios: Vec<String> = of_rate[1..]
            .iter()
            .map(|r| {
                format!(
                    "{} x{:.1}",
                    r.batching,
                    support::percentile(&r.ms, 0.5) / p50
                )
            })
            .collect();
        println!("{rate:.0} Hz: agent p50 / raw p50: {}", ratios.join("; "));
    }
    Ok(())
}

/// The baseline: one event per message, MessagePack without compression,
/// published at `rate` with pipelined acks and pulled by a durable consumer.
async fn raw_case(
    js: &jetstream::Context,
    run: u32,
    rate: f64,
    events: u64,
    args: &LatencyBenchArgs,
) -> anyhow::Result<Latencies> {
    let subject = format!("lcls.bench.bench1.{run}.raw");
    let stream = js.get_stream("LCLS_BENCH").await?;
    let durable = format!("raw-lat-{run}");
    let consumer = stream
        .create_consumer(pull_consumer_config(
            &durable,
            vec![subject.clone()],
            &StartPosition::All,
            &PullLimits::default(),
        ))
        .await
        .with_context(|| format!("creating consumer {durable}"))?;
    let warmup = warmup_events(rate, args.warmup);
    let reader = tokio::spawn(async move {
        let mut ms = Vec::with_capacity(events as usize);
        let mut messages = consumer.messages().await?;
        let limits = DecodeLimits::default();
        let mut received = 0u64;
        while received < events {
            let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
                .await
                .context("raw consumer: no message for 30 s")?
                .context("raw consumer: stream ended")?
                .map_err(|e| anyhow::anyhow!("raw consumer: {e}"))?;
            let batch = wire::decode(message.headers.as_ref(), &message.payload, &limits)?;
            for e in &batch.events {
                received += 1;
                if e.index >= warmup {
                    ms.push(latency_ms(e.time_ns));
                }
            }
            message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        anyhow::Ok(ms)
    });
    let model = DetectorModel {
        height: args.height,
        width: args.width,
        ..Default::default()
    };
    let options = EncodeOptions {
        compression: Compression::None,
        filters: FilterPolicy::none(),
        ..Default::default()
    };
    let started = tokio::time::Instant::now();
    let mut acks = futures::stream::FuturesOrdered::new();
    for index in 0..events {
        tokio::time::sleep_until(started + Duration::from_secs_f64(index as f64 / rate)).await;
        let event = model.event("raw", index, support::now_ns());
        let encoded = wire::encode(Batch::new("bench1", run, "raw", vec![event])?, &options)?;
        for m in encoded.messages {
            let ack = js
                .publish_with_headers(subject.clone(), m.headers, m.payload)
                .await?;
            acks.push_back(std::future::IntoFuture::into_future(ack));
        }
        while acks.len() > 64 {
            acks.next().await.context("ack")??;
        }
    }
    while let Some(ack) = support::step("raw publish acks", acks.next()).await? {
        ack?;
    }
    let waited = Instant::now();
    let mut ms = support::step("raw consumer", reader).await???;
    tracing::debug!(
        "raw consumer finished {:?} after the last ack",
        waited.elapsed()
    );
    let _ = stream.delete_consumer(&durable).await;
    ms.sort_by(f64::total_cmp);
    Ok(Latencies {
        name: "raw async-nats publish -> pull (baseline)".into(),
        rate,
        batching: "1 event per message, no compression, no spool".into(),
        ms,
    })
}
