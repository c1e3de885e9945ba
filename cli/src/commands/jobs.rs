//! `lclstream jobs`: submit, watch, list, cancel and pull publish jobs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lclstream_gateway::jobs::protocol::{
    EventRange, JobBatch, JobList, JobListRequest, JobProcessing, JobRecord, JobRef, JobRequest,
    JobState, JobView, VERB_CANCEL, VERB_GET, VERB_LIST, VERB_SUBMIT,
};
use lclstream_partner::hdf5_sink::Hdf5Sink;
use lclstream_partner::jsonl::JsonlSink;
use lclstream_partner::{EventSink, PartnerClient, PullOptions};

use super::PartnerConnection as Connection;

/// The `jobs` subcommands.
#[derive(clap::Subcommand)]
pub enum JobsCommand {
    /// Submit a job: stream a run (or run range) from facility storage.
    Submit(SubmitArgs),
    /// Show a job's record and consumer.
    Get(JobArgs),
    /// List the institution's jobs.
    List(ListArgs),
    /// Show a job's progress until it ends.
    Watch(WatchArgs),
    /// Cancel a job and release its consumer.
    Cancel(JobArgs),
    /// Pull a job's data (also while it runs).
    Pull(PullArgs),
}

/// Arguments of `jobs submit`.
#[derive(clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    connection: Connection,
    /// The whole request as a JSON file (the other request options are then not allowed).
    #[arg(long, conflicts_with_all = ["instrument", "experiment", "run"])]
    request: Option<PathBuf>,
    /// Instrument, e.g. mfx.
    #[arg(long, required_unless_present = "request")]
    instrument: Option<String>,
    /// Experiment, e.g. mfxp1234.
    #[arg(long, required_unless_present = "request")]
    experiment: Option<String>,
    /// Run number.
    #[arg(long, required_unless_present = "request")]
    run: Option<u32>,
    /// Last run of a range (inclusive).
    #[arg(long)]
    run_end: Option<u32>,
    /// Field to keep (repeat); default all.
    #[arg(long = "field")]
    fields: Vec<String>,
    /// Region of interest y0,y1,x0,x1 (half-open).
    #[arg(long, value_delimiter = ',')]
    roi: Option<Vec<u64>>,
    /// n x n binning.
    #[arg(long)]
    bin: Option<u64>,
    /// Values below become zero.
    #[arg(long)]
    threshold: Option<f64>,
    /// Convert arrays to this type, e.g. f32.
    #[arg(long)]
    dtype: Option<String>,
    /// Most events per batch.
    #[arg(long, default_value_t = JobBatch::default().max_events)]
    batch_events: usize,
    /// Most bytes per batch.
    #[arg(long, default_value_t = JobBatch::default().max_bytes)]
    batch_bytes: usize,
    /// Only events FIRST:LAST (inclusive) of each run.
    #[arg(long)]
    events: Option<String>,
    /// Label shown in listings.
    #[arg(long)]
    label: Option<String>,
    /// Show progress until the job ends.
    #[arg(long)]
    watch: bool,
}

/// Arguments naming one job.
#[derive(clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    connection: Connection,
    /// Job id.
    job: String,
}

/// Arguments of `jobs list`.
#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only jobs in this state (queued, running, done, failed, cancelled).
    #[arg(long)]
    state: Option<String>,
}

/// Arguments of `jobs watch`.
#[derive(clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    connection: Connection,
    /// Job id.
    job: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 24.0 * 3600.0)]
    timeout: f64,
}

/// Arguments of `jobs pull`.
#[derive(clap::Args)]
pub struct PullArgs {
    #[command(flatten)]
    connection: Connection,
    /// Job id.
    job: String,
    /// Write events to this HDF5 file.
    #[arg(long, conflicts_with = "jsonl")]
    hdf5: Option<PathBuf>,
    /// Write JSON lines to stdout, or to FILE.
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    jsonl: Option<String>,
    /// Stop after this many seconds without a message.
    #[arg(long, default_value_t = 30.0)]
    idle_timeout: f64,
}

fn parse_events(text: &str) -> anyhow::Result<EventRange> {
    let (a, b) = text
        .split_once(':')
        .context("--events: expected FIRST:LAST")?;
    Ok(EventRange {
        first: a
            .trim()
            .parse()
            .context("--events: FIRST is not a number")?,
        last: b.trim().parse().context("--events: LAST is not a number")?,
    })
}

fn request_of(args: &SubmitArgs) -> anyhow::Result<JobRequest> {
    if let Some(path) = &args.request {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return serde_json::from_slice(&text).with_context(|| format!("in {}", path.display()));
    }
    let roi = match args.roi.as_deref() {
        None => None,
        Some(&[y0, y1, x0, x1]) => Some([y0, y1, x0, x1]),
        Some(other) => anyhow::bail!("--roi takes four values y0,y1,x0,x1; got {other:?}"),
    };
    Ok(JobRequest {
        instrument: args.instrument.clone().unwrap_or_default(),
        experiment: args.experiment.clone().unwrap_or_default(),
        run: args.run.unwrap_or_default(),
        run_end: args.run_end,
        fields: args.fields.clone(),
        processing: JobProcessing {
            apply_to: Vec::new(),
            roi,
            bin: args.bin,
            threshold: args.threshold,
            dtype: args.dtype.clone(),
        },
        batch: JobBatch {
            max_events: args.batch_events,
            max_bytes: args.batch_bytes,
        },
        events: args.events.as_deref().map(parse_events).transpose()?,
        label: args.label.clone(),
    })
}

fn print_json(value: impl Into<serde_json::Value>) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&value.into())?);
    Ok(())
}

/// Shows a job's progress on stderr until it ends; returns the final record.
pub async fn watch(
    client: &PartnerClient,
    job: &str,
    timeout: Duration,
) -> anyhow::Result<JobRecord> {
    let view: JobView = client
        .call_raw(VERB_GET, serde_json::to_vec(&JobRef { job: job.into() })?)
        .await?;
    let mut updates = client
        .job_status(&view)
        .await
        .context("subscribing to job status")?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {pos}/{len} events [{elapsed_precise}] eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let show = |r: &JobRecord| {
        if let Some(total) = r.events_total {
            bar.set_length(total);
        }
        bar.set_position(r.events);
        bar.set_message(format!("{} {}", r.job, r.state));
    };
    let mut record = view.record.clone();
    show(&record);
    let deadline = Instant::now() + timeout;
    // Status arrives pushed; a periodic poll covers missed messages.
    while !record.state.is_terminal() {
        if Instant::now() >= deadline {
            bar.abandon();
            anyhow::bail!("job {job} is still {} after {timeout:?}", record.state);
        }
        tokio::select! {
            // Only status the gateway signed about this job (`JobStatus` drops the rest).
            update = updates.next() => match update {
                Some(update) => record = update,
                None => {
                    bar.abandon();
                    anyhow::bail!("the status subscription of job {job} ended (connection closed)");
                }
            },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                let view: JobView = client
                    .call_raw(VERB_GET, serde_json::to_vec(&JobRef { job: job.into() })?)
                    .await?;
                record = view.record;
            }
        }
        show(&record);
    }
    bar.finish();
    Ok(record)
}

/// Runs `lclstream jobs ...`.
pub async fn run(command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::Submit(args) => {
            let request = request_of(&args)?;
            let client = args.connection.connect().await?;
            let view: JobView = client
                .call_raw(VERB_SUBMIT, serde_json::to_vec(&request)?)
                .await?;
            print_json(serde_json::to_value(&view)?)?;
            if args.watch {
                let record =
                    watch(&client, &view.record.job, Duration::from_secs(24 * 3600)).await?;
                print_json(serde_json::to_value(&record)?)?;
            }
        }
        JobsCommand::Get(args) => {
            let client = args.connection.connect().await?;
            let view: JobView = client
                .call_raw(VERB_GET, serde_json::to_vec(&JobRef { job: args.job })?)
                .await?;
            print_json(serde_json::to_value(&view)?)?;
        }
        JobsCommand::List(args) => {
            let state = match args.state.as_deref() {
                None => None,
                Some(s) => Some(
                    serde_json::from_value::<JobState>(serde_json::Value::String(s.into()))
                        .with_context(|| format!("--state {s:?}: expected queued, running, done, failed or cancelled"))?,
                ),
            };
            let client = args.connection.connect().await?;
            let list: JobList = client
                .call_raw(VERB_LIST, serde_json::to_vec(&JobListRequest { state })?)
                .await?;
            for r in &list.jobs {
                println!(
                    "{}\t{}\t{}/{}\truns {}-{}\t{} events\t{} bytes\t{}",
                    r.job,
                    r.state,
                    r.request.instrument,
                    r.request.experiment,
                    r.request.run,
                    r.request.last_run(),
                    r.events,
                    r.bytes,
                    r.consumer
                );
            }
            if list.truncated {
                eprintln!("(list truncated)");
            }
        }
        JobsCommand::Watch(args) => {
            if !args.timeout.is_finite() || args.timeout <= 0.0 {
                anyhow::bail!("--timeout must be positive");
            }
            let client = args.connection.connect().await?;
            let record = watch(&client, &args.job, Duration::from_secs_f64(args.timeout)).await?;
            print_json(serde_json::to_value(&record)?)?;
            if record.state != JobState::Done {
                anyhow::bail!(
                    "job {} ended {}: {}",
                    record.job,
                    record.state,
                    record.error.unwrap_or_default()
                );
            }
        }
        JobsCommand::Cancel(args) => {
            let client = args.connection.connect().await?;
            let view: JobView = client
                .call_raw(VERB_CANCEL, serde_json::to_vec(&JobRef { job: args.job })?)
                .await?;
            print_json(serde_json::to_value(&view)?)?;
        }
        JobsCommand::Pull(args) => {
            if !args.idle_timeout.is_finite() || args.idle_timeout <= 0.0 {
                anyhow::bail!("--idle-timeout must be positive");
            }
            let client = args.connection.connect().await?;
            let view: JobView = client
                .call_raw(
                    VERB_GET,
                    serde_json::to_vec(&JobRef {
                        job: args.job.clone(),
                    })?,
                )
                .await?;
            let grant = view
                .grant
                .with_context(|| format!("job {} has no consumer any more", args.job))?;
            let mut sink: Box<dyn EventSink> = match (&args.hdf5, args.jsonl.as_deref()) {
                (Some(path), _) => Box::new(Hdf5Sink::open(path)?),
                (None, Some("-")) | (None, None) => Box::new(JsonlSink::stdout()),
                (None, Some(path)) => Box::new(JsonlSink::open(path.as_ref())?),
            };
            let options = PullOptions {
                max_events: (view.record.state == JobState::Done)
                    .then_some(view.record.events_total)
                    .flatten(),
                idle_timeout: Duration::from_secs_f64(args.idle_timeout),
                ..Default::default()
            };
            let summary = client.pull(&grant, &options, sink.as_mut()).await?;
            eprintln!(
                "{}",
                serde_json::json!({
                    "job": args.job,
                    "consumer": grant.consumer,
                    "events": summary.events,
                    "duplicates_skipped": summary.duplicates,
                    "bytes": summary.bytes,
                    "stop": format!("{:?}", summary.stop),
                })
            );
        }
    }
    Ok(())
}
