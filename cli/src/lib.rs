//! `lclstream`: the one user-facing binary, as a library so that tests can
//! build a copy of it next to their own crate.

pub mod commands;
pub mod logging;

use clap::{Parser, Subcommand};

/// Stream X-ray experiment data from facilities to partner institutions over NATS JetStream.
/// The command line.
#[derive(Parser)]
#[command(name = "lclstream", version, about)]
pub struct Cli {
    /// Log format: `human` or `json`.
    #[arg(
        long,
        global = true,
        default_value = "human",
        env = "LCLSTREAM_LOG_FORMAT"
    )]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the whole system locally on embedded defaults and verify every event.
    Demo(commands::demo::DemoArgs),
    /// Run the facility agent: read events, batch, encode and publish into JetStream.
    Agent(commands::agent::AgentArgs),
    /// Write sample HDF5 runs (the sample layout or a CXI-like one).
    Sample(commands::sample::SampleArgs),
    /// Run the gateway: auth callout, data requests, quotas and audit.
    Gateway(commands::gateway::GatewayArgs),
    /// Show the live gateways (id, start, last heartbeat, version) and which one meters (facility users only).
    Gateways(commands::gateways::GatewaysArgs),
    /// Request a dataset through the gateway and pull it as a partner institution.
    Pull(commands::pull::PullArgs),
    /// Watch a stream live in a browser (latest frame, trends, rates), as a partner.
    View(commands::view::ViewArgs),
    /// Run, render and inspect nats-server deployments.
    #[command(subcommand)]
    Nats(commands::nats::NatsCommand),
    /// Write a complete single-host deployment (keys, policies, server, gateway and agent configurations).
    Init(commands::init::InitArgs),
    /// Create an nkey pair for an institution, agent or operator.
    Keygen(commands::keygen::KeygenArgs),
    /// Validate institution policy files.
    #[command(subcommand)]
    Policy(commands::policy::PolicyCommand),
    /// Submit, watch, list, cancel and pull publish jobs (runs streamed from storage on request).
    #[command(subcommand)]
    Jobs(commands::jobs::JobsCommand),
    /// Run publish jobs from the gateway's work queue (facility side).
    Worker(commands::worker::WorkerArgs),
    /// Run benchmarks against baselines measured in the same run.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

/// Parses the command line and runs the chosen subcommand.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo prints its own narrative; its components' logs would drown it.
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    logging::init(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Agent(args) => commands::agent::run(args).await,
            Command::Sample(args) => commands::sample::run(args).await,
            Command::Gateway(args) => commands::gateway::run(args).await,
            Command::Gateways(args) => commands::gateways::run(args).await,
            Command::Pull(args) => commands::pull::run(args).await,
            Command::View(args) => commands::view::run(args).await,
            Command::Nats(cmd) => commands::nats::run(cmd).await,
            Command::Init(args) => commands::init::run(args).await,
            Command::Keygen(args) => commands::keygen::run(args).await,
            Command::Policy(cmd) => commands::policy::run(cmd).await,
            Command::Bench(cmd) => commands::bench::run(cmd).await,
            Command::Jobs(cmd) => commands::jobs::run(cmd).await,
            Command::Worker(args) => commands::worker::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
