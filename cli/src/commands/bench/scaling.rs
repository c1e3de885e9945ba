//! `lclstream bench scaling`: agent and partner throughput against the
//! batch size (events per batch, then bytes per batch), and aggregate partner
//! throughput against the number of concurrent partner consumers, each table
//! normalised to its first row (the baseline of the same run).

use std::time::Duration;

use lclstream_nats::streams::PullLimits;
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::EncodeOptions;
use lclstream_partner::ReleaseRequest;

use super::support::{self, AgentBatching, Rate};

/// Arguments of `lclstream bench scaling`.
#[derive(clap::Args)]
pub struct ScalingBenchArgs {
    /// Seconds the agent reads in each batch-size case (then it drains).
    #[arg(long, default_value_t = 2.5)]
    pub seconds: f64,
    /// Frame height.
    #[arg(long, default_value_t = 256)]
    pub height: u64,
    /// Frame width.
    #[arg(long, default_value_t = 512)]
    pub width: u64,
    /// Events per batch, comma separated (batch.max_bytes 64 MiB).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 8, 64])]
    pub batch_events: Vec<usize>,
    /// Bytes per batch in KiB, comma separated (batch.max_events 1024).
    #[arg(long, value_delimiter = ',', default_values_t = vec![256usize, 1024, 8192])]
    pub batch_kib: Vec<usize>,
    /// Numbers of concurrent partner consumers, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 4, 16])]
    pub consumers: Vec<usize>,
    /// Events every consumer pulls in the consumer cases.
    #[arg(long, default_value_t = 1600)]
    pub consumer_events: u64,
    /// fsync every spool append (as in production).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
}

/// One batch-size case: agent ingest and a partner pulling what it published.
struct BatchCase {
    name: String,
    agent: Rate,
    messages: u64,
    pull: Rate,
}

/// Runs the scaling benchmark.
pub async fn run(args: ScalingBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.seconds < 3600.0,
        "--seconds must be between 0 and 3600"
    );
    anyhow::ensure!(
        args.batch_events.iter().all(|n| (1..=100_000).contains(n))
            && args.batch_kib.iter().all(|n| (1..=1 << 20).contains(n))
            && args.consumers.iter().all(|n| (1..=256).contains(n)),
        "--batch-events, --batch-kib and --consumers must be positive (and at most 100000, 1 GiB, 256)"
    );
    let server = support::start_server().await?;
    let url = server.url();
    let js = support::jetstream_with_stream(&url).await?;
    let most = *args.consumers.iter().max().unwrap_or(&1) as u32;
    let gateway = support::BenchGateway::start(&url, most + 2, &PullLimits::default()).await?;
    let client = support::partner(&url).await?;
    let work = tempfile::tempdir()?;
    let frame = args.height * args.width * 2;
    let described = DetectorModel {
        height: args.height,
        width: args.width,
        ..Default::default()
    }
    .describe();
    println!(
        "scaling benchmark: synthetic detector ({described}; {} KiB frames), agent reads {} s per \
         case, spool fsync {}, server {url}",
        frame / 1024,
        args.seconds,
        args.fsync
    );

    let mut settings: Vec<(String, AgentBatching)> = Vec::new();
    for &n in &args.batch_events {
        settings.push((
            format!("{n} events"),
            AgentBatching {
                max_events: n,
                max_bytes: 64 << 20,
                ..Default::default()
            },
        ));
    }
    for &kib in &args.batch_kib {
        settings.push((
            format!("{kib} KiB"),
            AgentBatching {
                max_events: 1024,
                max_bytes: kib << 10,
                ..Default::default()
            },
        ));
    }
    let mut cases = Vec::new();
    for (i, (name, mut batching)) in settings.into_iter().enumerate() {
        let run = i as u32 + 1;
        batching.fsync = args.fsync;
        // A small spool makes reading wait for acks, so the rate is the pipeline's.
        batching.spool_bytes = 64 << 20;
        let toml = support::agent_toml(
            &url,
            &work.path().join(format!("spool{run}")),
            &batching,
            &support::synthetic_source("scale", run, args.height, args.width, None, 0.0),
        );
        let seconds = Duration::from_secs_f64(args.seconds);
        let report = support::run_agent(&toml, tokio::time::sleep(seconds)).await?;
        anyhow::ensure!(
            report.spooled_at_exit == 0,
            "case {name}: {} batches left in the spool",
            report.spooled_at_exit
        );
        let grant = support::grant(
            &client,
            &format!("lcls.bench.bench1.{run}.scale"),
            &format!("scale{run}"),
        )
        .await?;
        let (_, pull) =
            support::partner_pull_counting(&client, &grant, report.events_published).await?;
        release(&client, &grant.consumer).await?;
        cases.push(BatchCase {
            name,
            agent: Rate::from_report(&report),
            messages: report.messages,
            pull,
        });
    }

    // Consumers: one dataset, read in full by every consumer at once.
    let run = cases.len() as u32 + 1;
    let model = DetectorModel {
        height: args.height,
        width: args.width,
        ..Default::default()
    };
    let subject = format!("lcls.bench.bench1.{run}.fanout");
    support::publish_synthetic(
        &js,
        &subject,
        run,
        "fanout",
        &model,
        args.consumer_events,
        8,
        &EncodeOptions::default(),
    )
    .await?;
    let mut fanout = Vec::new();
    for &n in &args.consumers {
        let mut clients = Vec::new();
        for k in 0..n {
            let c = support::partner(&url).await?;
            let g = support::grant(&c, &subject, &format!("fan{n}-{k}")).await?;
            clients.push((c, g));
        }
        let tasks: Vec<_> = clients
            .iter()
            .map(|(c, g)| {
                let (c, g, events) = (c.clone(), g.clone(), args.consumer_events);
                tokio::spawn(async move { support::partner_pull_counting(&c, &g, events).await })
            })
            .collect();
        // Until the last event of the slowest consumer reached its sink.
        let mut slowest: f64 = 0.0;
        let mut fastest = f64::MAX;
        let mut wire = 0;
        let mut raw = 0;
        for t in tasks {
            let (_, rate) = support::step("consumer", t).await???;
            slowest = slowest.max(rate.secs);
            fastest = fastest.min(rate.secs);
            wire += rate.wire_bytes;
            raw += rate.raw_bytes;
        }
        let total = Rate {
            events: args.consumer_events * n as u64,
            raw_bytes: raw,
            wire_bytes: wire,
            secs: slowest,
        };
        for (c, g) in &clients {
            release(c, &g.consumer).await?;
        }
        fanout.push((n, total, fastest));
    }
    gateway.handle.shutdown().await;

    println!();
    println!(
        "Batch size (agent reads for {} s, then drains; a partner then pulls what was published):",
        args.seconds
    );
    println!();
    println!("| batch limit | events | events/message | agent events/s | agent MB/s raw | agent MB/s wire | agent vs first | partner events/s | partner vs first |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let groups = [
        &cases[..args.batch_events.len()],
        &cases[args.batch_events.len()..],
    ];
    for group in groups {
        let Some(first) = group.first() else { continue };
        for c in group {
            println!(
                "| {} | {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.2} | {:.0} | {:.2} |",
                c.name,
                c.agent.events,
                c.agent.events as f64 / c.messages.max(1) as f64,
                c.agent.events_per_sec(),
                c.agent.raw_mb_s(),
                c.agent.wire_mb_s(),
                c.agent.events_per_sec() / first.agent.events_per_sec().max(1e-9),
                c.pull.events_per_sec(),
                c.pull.events_per_sec() / first.pull.events_per_sec().max(1e-9),
            );
        }
    }
    println!();
    println!(
        "Concurrent consumers (each its own durable consumer reading all {} events of the same stream):",
        args.consumer_events
    );
    println!();
    println!("| consumers | events delivered | s | aggregate events/s | aggregate MB/s raw | aggregate MB/s wire | fastest consumer events/s | aggregate vs first |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let first = fanout.first().map(|f| f.1.events_per_sec()).unwrap_or(1.0);
    for (n, total, fastest) in &fanout {
        println!(
            "| {n} | {} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} |",
            total.events,
            total.secs,
            total.events_per_sec(),
            total.raw_mb_s(),
            total.wire_mb_s(),
            args.consumer_events as f64 / fastest.max(1e-9),
            total.events_per_sec() / first.max(1e-9)
        );
    }
    println!();
    let summary_events = groups[0]
        .last()
        .zip(groups[0].first())
        .map(|(l, f)| l.agent.events_per_sec() / f.agent.events_per_sec().max(1e-9))
        .unwrap_or(0.0);
    let summary_fanout = fanout
        .last()
        .map(|f| f.1.events_per_sec() / first.max(1e-9))
        .unwrap_or(0.0);
    println!(
        "largest vs smallest event batch: agent x{summary_events:.2}; {} consumers vs {}: aggregate x{summary_fanout:.2}",
        fanout.last().map(|f| f.0).unwrap_or(0),
        fanout.first().map(|f| f.0).unwrap_or(0),
    );
    Ok(())
}

async fn release(client: &lclstream_partner::PartnerClient, consumer: &str) -> anyhow::Result<()> {
    support::step(
        "release",
        client.release(&ReleaseRequest {
            consumer: Some(consumer.to_string()),
            label: None,
        }),
    )
    .await??;
    Ok(())
}
