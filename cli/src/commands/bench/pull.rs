//! `lclstream bench pull`: the partner library (pull, reassemble, decode,
//! confirmed ack, into a counting sink) against raw async-nats pulls of the
//! same messages from the same stream (acked without decoding), in one run.

use std::time::{Duration, Instant};

use lclstream_nats::streams::PullLimits;
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{self, DecodeLimits, EncodeOptions};

use super::support::{self, Rate, RawAck};

/// Arguments of `lclstream bench pull`.
#[derive(clap::Args)]
pub struct PullBenchArgs {
    /// Events published and pulled by each case.
    #[arg(long, default_value_t = 1600)]
    pub events: u64,
    /// Frame height.
    #[arg(long, default_value_t = 512)]
    pub height: u64,
    /// Frame width.
    #[arg(long, default_value_t = 1024)]
    pub width: u64,
    /// Events per published batch (message).
    #[arg(long, default_value_t = 8)]
    pub batch_events: u64,
    /// Messages per pull request (the consumer's max_batch).
    #[arg(long, default_value_t = 64)]
    pub pull_batch: i64,
    /// Decode threads of the parallel partner case (0: one per available core).
    #[arg(long, default_value_t = 0)]
    pub decode_threads: usize,
}

/// Runs the pull benchmark.
pub async fn run(args: PullBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.events > 0, "--events must be positive");
    anyhow::ensure!(args.pull_batch > 0, "--pull-batch must be positive");
    let server = support::start_server().await?;
    let url = server.url();
    let js = support::jetstream_with_stream(&url).await?;
    let subject = "lcls.bench.bench1.1.det";
    let model = DetectorModel {
        height: args.height,
        width: args.width,
        ..Default::default()
    };
    let published = support::publish_synthetic(
        &js,
        subject,
        1,
        "det",
        &model,
        args.events,
        args.batch_events,
        &EncodeOptions::default(),
    )
    .await?;
    let messages = js
        .get_stream("LCLS_BENCH")
        .await?
        .info()
        .await?
        .state
        .messages;
    let frame_bytes = args.height * args.width * 2;
    let data_bytes = args.events * frame_bytes;
    println!(
        "pull benchmark: {} events of {}x{} u16 ({:.2} MB) in {messages} messages of {} events, \
         {:.1} MB stored (ratio x{:.1}), pull batch {} messages, server {url}",
        args.events,
        args.height,
        args.width,
        frame_bytes as f64 / 1e6,
        args.batch_events,
        published.wire_bytes as f64 / 1e6,
        published.raw_bytes as f64 / published.wire_bytes.max(1) as f64,
        args.pull_batch
    );
    let limits = PullLimits {
        max_batch: args.pull_batch,
        ..PullLimits::default()
    };
    let filter = "lcls.bench.bench1.>";
    let idle = Duration::from_secs(10);
    // The raw pulls are fast: repeat them (fresh consumers) for at least a second.
    let raw = |ack: RawAck, keep: bool| {
        let js = js.clone();
        async move {
            let (mut total, mut messages_kept) = (Rate::default(), Vec::new());
            for round in 0..50 {
                let durable = format!("raw-{ack:?}-{round}").to_lowercase();
                let (rate, m) = support::raw_pull(
                    &js,
                    &durable,
                    filter,
                    &limits,
                    messages,
                    ack,
                    idle,
                    keep && round == 0,
                )
                .await?;
                anyhow::ensure!(
                    rate.wire_bytes == published.wire_bytes,
                    "raw pull received {} of {} bytes",
                    rate.wire_bytes,
                    published.wire_bytes
                );
                if round == 0 {
                    messages_kept = m;
                }
                total.secs += rate.secs;
                total.events += args.events;
                total.raw_bytes += data_bytes;
                total.wire_bytes += rate.wire_bytes;
                if total.secs >= 1.0 {
                    break;
                }
            }
            anyhow::Ok((total, messages_kept))
        }
    };
    let (plain, kept) = raw(RawAck::Plain, true).await?;
    let (confirmed, _) = raw(RawAck::Confirmed, false).await?;
    // Decoding alone, on one thread, of the same messages: the partner's ceiling.
    let decode = tokio::task::spawn_blocking(move || {
        let limits = DecodeLimits::default();
        let started = Instant::now();
        let mut events = 0u64;
        for m in &kept {
            events += wire::decode(Some(&m.headers), &m.payload, &limits)?
                .events
                .len() as u64;
        }
        anyhow::Ok(Rate {
            events,
            raw_bytes: data_bytes,
            wire_bytes: published.wire_bytes,
            secs: started.elapsed().as_secs_f64(),
        })
    })
    .await??;
    anyhow::ensure!(
        decode.events == args.events,
        "decoded {} events",
        decode.events
    );
    let gateway = support::BenchGateway::start(&url, 4, &limits).await?;
    let client = support::partner(&url).await?;
    // One decode thread (the baseline of parallel decode), then the default.
    let threads = if args.decode_threads == 0 {
        lclstream_partner::default_decode_threads()
    } else {
        args.decode_threads
    };
    let mut partners = Vec::new();
    for (label, n) in [("bench-pull-1", 1), ("bench-pull-n", threads)] {
        let grant = support::grant(&client, filter, label).await?;
        let (summary, rate) =
            support::partner_pull_counting_threads(&client, &grant, args.events, n).await?;
        anyhow::ensure!(
            rate.raw_bytes == data_bytes && summary.messages == messages,
            "partner received {} array bytes in {} messages, expected {data_bytes} in {messages}",
            rate.raw_bytes,
            summary.messages
        );
        partners.push(rate);
    }
    let (one, partner) = (partners[0], partners[1]);
    gateway.handle.shutdown().await;

    println!();
    println!("{}", Rate::header("case"));
    println!("{}", plain.row("raw async-nats pull + ack (baseline)"));
    println!("{}", confirmed.row("raw async-nats pull + double_ack"));
    println!("{}", decode.row("stage alone: decode in memory (1 thread)"));
    println!(
        "{}",
        one.row("partner library: pull + decode + double_ack, 1 decode thread")
    );
    println!(
        "{}",
        partner.row(&format!(
            "partner library: pull + decode + double_ack, {threads} decode threads"
        ))
    );
    println!();
    println!(
        "partner {threads} decode threads / 1 decode thread: {:.2}",
        partner.events_per_sec() / one.events_per_sec()
    );
    println!(
        "partner / raw: {:.2} (vs plain ack), {:.2} (vs confirmed ack); partner / decode alone: {:.2}; \
         MB/s raw count event array bytes",
        partner.events_per_sec() / plain.events_per_sec(),
        partner.events_per_sec() / confirmed.events_per_sec(),
        partner.events_per_sec() / decode.events_per_sec()
    );
    Ok(())
}
