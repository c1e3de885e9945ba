//! `lclstream pull`: request a dataset through the gateway and pull it as a partner.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use lclstream_partner::hdf5_sink::{Hdf5Compression, Hdf5Sink};
use lclstream_partner::jsonl::JsonlSink;
use lclstream_partner::{DatasetRequest, End, EventSink, PartnerClient, PullOptions, Start};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Arguments of `lclstream pull`.
#[derive(clap::Args)]
pub struct PullArgs {
    #[command(flatten)]
    connection: super::PartnerConnection,
    /// Subject filter (repeat for several), e.g. lcls.mfx.mfxp1234.>.
    #[arg(long = "subject", required = true)]
    subjects: Vec<String>,
    /// Start: all, new, a stream sequence, or an RFC 3339 time.
    #[arg(long, default_value = "all")]
    start: String,
    /// Inclusive end: a stream sequence or an RFC 3339 time.
    #[arg(long)]
    end: Option<String>,
    /// Dataset label: the same label later resumes where this pull stopped.
    #[arg(long)]
    label: Option<String>,
    /// Write events to this HDF5 file (events already in it are skipped).
    #[arg(long, conflicts_with = "jsonl")]
    hdf5: Option<PathBuf>,
    /// Compression of new HDF5 datasets: gzip (shuffle + deflate level 4),
    /// gzip:1 to gzip:9, lzf, or none.
    #[arg(long, default_value = "gzip", requires = "hdf5")]
    hdf5_compression: Hdf5Compression,
    /// Write JSON lines (scalars; arrays as dtype and shape) to stdout, or to
    /// FILE (events already in it are skipped).
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    jsonl: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    max_events: Option<u64>,
    /// Stop after this many seconds without a message.
    #[arg(long, default_value_t = 30.0)]
    idle_timeout: f64,
    /// Messages per pull request (0: the gateway's limit).
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Bytes per pull request (0: the gateway's limit).
    #[arg(long, default_value_t = 0)]
    batch_bytes: usize,
    /// Release the consumer after pulling (a later pull with the label starts over).
    #[arg(long)]
    release: bool,
    /// Threads decoding batches at once (0: one per available core); events
    /// still reach the output in order and are acknowledged after it has them.
    #[arg(long, default_value_t = 0)]
    decode_threads: usize,
}

fn parse_start(text: &str) -> anyhow::Result<Start> {
    Ok(match text {
        "all" => Start::All,
        "new" => Start::New,
        t if t.bytes().all(|b| b.is_ascii_digit()) => {
            Start::Sequence(t.parse().context("--start: sequence out of range")?)
        }
        t => Start::Time(OffsetDateTime::parse(t, &Rfc3339).with_context(|| {
            format!("--start {t:?}: expected all, new, a sequence number or an RFC 3339 time")
        })?),
    })
}

fn parse_end(text: &str) -> anyhow::Result<End> {
    Ok(if text.bytes().all(|b| b.is_ascii_digit()) {
        End::Sequence(text.parse().context("--end: sequence out of range")?)
    } else {
        End::Time(OffsetDateTime::parse(text, &Rfc3339).with_context(|| {
            format!("--end {text:?}: expected a sequence number or an RFC 3339 time")
        })?)
    })
}

/// Runs `lclstream pull`.
pub async fn run(args: PullArgs) -> anyhow::Result<()> {
    if !args.idle_timeout.is_finite() || args.idle_timeout <= 0.0 || args.idle_timeout > 1e6 {
        anyhow::bail!("--idle-timeout must be between 0 and 1e6 seconds");
    }
    let config = args.connection.config()?;
    let request = DatasetRequest {
        filters: args.subjects.clone(),
        start: parse_start(&args.start)?,
        end: args.end.as_deref().map(parse_end).transpose()?,
        label: args.label.clone(),
    };
    let mut sink: Box<dyn EventSink> = match (&args.hdf5, args.jsonl.as_deref()) {
        (Some(path), _) => Box::new(Hdf5Sink::open_with(path, args.hdf5_compression)?),
        (None, Some("-")) | (None, None) => Box::new(JsonlSink::stdout()),
        (None, Some(path)) => Box::new(JsonlSink::open(path.as_ref())?),
    };
    let client = PartnerClient::connect(&config).await?;
    let grant = client.request_dataset(&request).await?;
    tracing::info!(
        "{} consumer {} on {} ({} pending)",
        if grant.resumed { "resuming" } else { "created" },
        grant.consumer,
        grant.stream,
        grant.num_pending
    );
    let options = PullOptions {
        batch_messages: args.batch,
        batch_bytes: args.batch_bytes,
        max_events: args.max_events,
        idle_timeout: Duration::from_secs_f64(args.idle_timeout),
        decode_threads: match args.decode_threads {
            0 => lclstream_partner::default_decode_threads(),
            n => n,
        },
        ..Default::default()
    };
    let summary = client.pull(&grant, &options, sink.as_mut()).await?;
    if args.release {
        client
            .release(&lclstream_partner::ReleaseRequest {
                consumer: Some(grant.consumer.clone()),
                label: None,
            })
            .await?;
    }
    eprintln!(
        "{}",
        serde_json::json!({
            "consumer": grant.consumer,
            "stream": grant.stream,
            "resumed": grant.resumed,
            "events": summary.events,
            "duplicates_skipped": summary.duplicates,
            "batches": summary.batches,
            "messages": summary.messages,
            "bytes": summary.bytes,
            "rejected": summary.rejected,
            "stop": format!("{:?}", summary.stop),
        })
    );
    Ok(())
}
