//! `lclstream nats`: local servers, topology rendering, local topologies and health.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use lclstream_gateway::auth::{callout_server_blocks, CalloutServerSettings};
use lclstream_gateway::keys::GatewayKeys;
use lclstream_nats::server::NatsServer;
use lclstream_nats::topology::status::{collect_status, collect_status_from_urls};
use lclstream_nats::topology::{
    edge_stream_name, partner_stream_name, PortMode, Role, RunningTopology, Topology,
};

/// nats-server subcommands.
#[derive(clap::Subcommand)]
pub enum NatsCommand {
    /// Start a local nats-server with JetStream (loopback, temporary store) until Ctrl-C.
    Server(ServerArgs),
    /// Write every nats-server config of a topology file into a directory.
    Render(RenderArgs),
    /// Run a whole topology locally on loopback, create its streams, and stop on Ctrl-C.
    Up(UpArgs),
    /// Show servers, leaf and gateway links, stream and consumer lag of a deployment.
    Status(StatusArgs),
}

/// Arguments of `lclstream nats server`.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// Run with the gateway's auth callout, as production does: accounts
    /// AUTH, LCLS, PARTNERS and SYS and the callout block for the gateway
    /// keys in this directory (created with fresh keys when missing; give
    /// the gateway the same directory as `[auth] keys_dir`).
    #[arg(long)]
    pub gateway_keys: Option<PathBuf>,
    /// Client port (default: a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Monitoring port (default: a free one).
    #[arg(long)]
    pub monitor_port: Option<u16>,
    /// JetStream `sync_interval` (`always` fsyncs each message before acknowledging it).
    #[arg(long)]
    pub sync_interval: Option<String>,
}

/// Arguments of `lclstream nats render`.
#[derive(clap::Args)]
pub struct RenderArgs {
    /// Topology file (TOML).
    pub topology: PathBuf,
    /// Output directory for `<server>.conf` files and `topology.resolved.toml`.
    #[arg(long)]
    pub out: PathBuf,
    /// The gateway's key directory (created with fresh keys when missing):
    /// renders the auth callout (accounts, issuer, xkey, system account) into
    /// the servers of every site the topology lists in `auth.callout_sites`.
    #[arg(long)]
    pub gateway_keys: Option<PathBuf>,
    /// Policy directory named in the gateway configurations written for
    /// `auth.gateways` (as the gateways' hosts see it).
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
}

/// Arguments of `lclstream nats up`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Topology file (TOML).
    pub topology: PathBuf,
    /// Directory for configs, logs and stores (default: a temporary directory removed on exit).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Ignore ports in the file and pick free loopback ports.
    #[arg(long)]
    pub free_ports: bool,
    /// Do not create the streams.
    #[arg(long)]
    pub no_streams: bool,
    /// How long to wait for the topology to form (seconds).
    #[arg(long, default_value_t = 60)]
    pub ready_timeout: u64,
}

/// Arguments of `lclstream nats status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Topology file with ports (e.g. `topology.resolved.toml` written by `up` or `render`).
    pub topology: Option<PathBuf>,
    /// Monitoring URLs (`http://host:8222`) instead of a topology file; repeatable.
    #[arg(long = "url", conflicts_with = "topology")]
    pub urls: Vec<String>,
}

/// Runs `lclstream nats`.
pub async fn run(command: NatsCommand) -> anyhow::Result<()> {
    match command {
        NatsCommand::Server(args) => server(args).await,
        NatsCommand::Render(args) => render(args),
        NatsCommand::Up(args) => up(args).await,
        NatsCommand::Status(args) => status(args).await,
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let blocks = match &args.gateway_keys {
        Some(dir) => callout_blocks(dir)?,
        None => Vec::new(),
    };
    let server = tokio::task::spawn_blocking(move || {
        NatsServer::start_with(|config| {
            if let Some(port) = args.port {
                config.port = port;
            }
            if let Some(port) = args.monitor_port {
                config.monitor_port = port;
            }
            if let Some(js) = config.jetstream.as_mut() {
                js.sync_interval = args.sync_interval.clone();
            }
            config.blocks.extend(blocks.iter().cloned());
        })
    })
    .await??;
    println!("nats-server running at {}", server.url());
    println!("monitoring: http://{}", server.monitor_addr());
    println!("store and log: {}", server.dir().display());
    if let Some(dir) = &args.gateway_keys {
        println!(
            "auth callout: run the gateway with [auth] keys_dir = {:?}",
            dir.display().to_string()
        );
    }
    println!("press Ctrl-C to stop");
    // SIGTERM too: a service manager or a test harness stops the server cleanly.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    tokio::task::spawn_blocking(move || drop(server)).await?;
    Ok(())
}

/// The server blocks of the gateway's auth callout for the keys in `dir`.
fn callout_blocks(dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let keys = GatewayKeys::load_or_generate(dir, true)
        .with_context(|| format!("gateway keys in {}", dir.display()))?;
    Ok(callout_server_blocks(&CalloutServerSettings::from_keys(
        &keys,
    )))
}

fn render(args: RenderArgs) -> anyhow::Result<()> {
    let mut topology = Topology::load(&args.topology)?;
    if !topology.auth.callout_sites.is_empty() {
        let dir = args.gateway_keys.as_deref().with_context(|| {
            format!(
                "{} asks for the auth callout at {:?}: give --gateway-keys DIR",
                args.topology.display(),
                topology.auth.callout_sites
            )
        })?;
        let blocks = callout_blocks(dir)?;
        for site in topology.auth.callout_sites.clone() {
            topology.add_blocks(Some(&site), blocks.clone());
        }
    } else if args.gateway_keys.is_some() {
        anyhow::bail!(
            "--gateway-keys given, but {} lists no auth.callout_sites",
            args.topology.display()
        );
    }
    let paths = topology.render(&args.out)?;
    for path in &paths {
        println!("{}", path.display());
    }
    println!("{}", args.out.join("topology.resolved.toml").display());
    if let Some(keys) = &args.gateway_keys {
        for path in render_gateways(&topology, keys, &args.policies, &args.out)? {
            println!("{}", path.display());
        }
    }
    Ok(())
}

/// One gateway configuration per gateway the topology lays out at each
/// callout site (`auth.gateways`): `<out>/gateways/<site>-gw<n>.toml`, each
/// connecting to its site's servers and sharing quota state with the others.
fn render_gateways(
    topology: &Topology,
    keys: &std::path::Path,
    policies: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<Vec<PathBuf>> {
    use lclstream_gateway::deploy::{gateway_config_text, GatewayFile, GatewayQuota};
    if topology.auth.gateways.is_empty() {
        return Ok(Vec::new());
    }
    let plan = topology.plan(PortMode::FromFile)?;
    let dir = out.join("gateways");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Relative paths in a gateway file are read from the file's directory.
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (keys, policies) = (absolute(keys), absolute(policies));
    let ca_file = topology
        .tls
        .as_ref()
        .and_then(|tls| tls.ca_file.as_ref().map(PathBuf::from));
    // The shared buckets live with the facility's streams: replicate them alike.
    let replicas = topology
        .sites
        .iter()
        .find(|s| s.role == Role::Facility)
        .map(|s| plan.site_servers(&s.name).count().clamp(1, 3))
        .unwrap_or(1);
    let mut paths = Vec::new();
    for (site, count) in &topology.auth.gateways {
        let servers: Vec<_> = plan.site_servers(site).collect();
        let url = servers
            .iter()
            .map(|s| s.client_url())
            .collect::<Vec<_>>()
            .join(",");
        for n in 1..=*count {
            let id = format!("{site}-gw{n}");
            let text = gateway_config_text(&GatewayFile {
                origin: "`lclstream nats render`",
                url: url.clone(),
                ca_file: ca_file.clone(),
                policies: policies.clone(),
                keys: keys.clone(),
                audit: PathBuf::from(format!("log/audit-{id}.jsonl")),
                metrics: None,
                quota: GatewayQuota::Shared {
                    replicas,
                    gateway_id: id.clone(),
                },
            });
            let path = dir.join(format!("{id}.toml"));
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            paths.push(path);
        }
    }
    Ok(paths)
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut topology = Topology::load(&args.topology)?;
    if args.free_ports {
        topology.clear_ports();
    }
    let temp;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix(&format!("lclstream-{}-", topology.name))
                .tempdir()
                .context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let start_dir = dir.clone();
    let mut running =
        tokio::task::spawn_blocking(move || RunningTopology::start(&topology, &start_dir))
            .await??;
    let timeout = Duration::from_secs(args.ready_timeout);
    running.wait_ready(timeout).await?;
    let streams = if args.no_streams {
        Vec::new()
    } else {
        running.create_streams(timeout).await?
    };
    print_urls(&running);
    if !streams.is_empty() {
        println!("streams: {}", streams.join(", "));
        print_stream_endpoints(&running);
    }
    let resolved = dir.join("topology.resolved.toml");
    println!("configs, logs and stores: {}", dir.display());
    println!("health: lclstream nats status {}", resolved.display());
    println!("press Ctrl-C to stop");
    // SIGTERM too, so that `timeout`, systemd or a test harness stop the servers cleanly.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    println!("stopping");
    tokio::task::spawn_blocking(move || running.stop_all()).await?;
    Ok(())
}

fn print_urls(running: &RunningTopology) {
    for site in &running.topology().sites {
        let what = match site.role {
            Role::Edge => format!("edge leaf node, JetStream domain {}", site.edge_domain()),
            Role::Facility => "facility cluster".to_string(),
            Role::Partner => "partner cluster".to_string(),
        };
        println!("site {} ({what}):", site.name);
        for server in running.plan().site_servers(&site.name) {
            println!(
                "  {}: {}  monitoring {}",
                server.name,
                server.client_url(),
                server.monitor_url()
            );
        }
    }
}

/// Where agents publish and partner consumers pull, per instrument.
fn print_stream_endpoints(running: &RunningTopology) {
    let topology = running.topology();
    for spec in &topology.streams {
        for edge in &spec.edges {
            if let Ok(url) = running.edge_url(Some(edge)) {
                println!(
                    "instrument {}: agents publish lcls.{}.> to {url} (stream {} in domain {})",
                    spec.instrument,
                    spec.instrument.to_ascii_lowercase(),
                    edge_stream_name(&spec.instrument),
                    topology
                        .site(edge)
                        .map(|s| s.edge_domain())
                        .unwrap_or_default()
                );
            }
        }
        for partner in &spec.partners {
            if let Ok(urls) = running.partner_urls(Some(partner)) {
                println!(
                    "instrument {}: partner {partner} pulls {} from {}",
                    spec.instrument,
                    partner_stream_name(&spec.instrument, partner),
                    urls.join(",")
                );
            }
        }
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let report = match (&args.topology, args.urls.is_empty()) {
        (Some(path), _) => {
            let topology = Topology::load(path)?;
            let plan = topology.plan(PortMode::FromFile).with_context(|| {
                format!(
                    "{}: status needs the ports in use; pass the topology.resolved.toml written by `lclstream nats up`",
                    path.display()
                )
            })?;
            tokio::task::spawn_blocking(move || collect_status(&plan.servers)).await?
        }
        (None, false) => {
            let urls = args.urls.clone();
            tokio::task::spawn_blocking(move || collect_status_from_urls(&urls))
                .await?
                .map_err(anyhow::Error::msg)?
        }
        (None, true) => anyhow::bail!("give a topology file or at least one --url"),
    };
    print!("{}", report.render());
    let bad = report
        .servers
        .iter()
        .filter(|s| !(s.up && s.healthy))
        .count();
    if bad > 0 {
        anyhow::bail!(
            "{bad} of {} servers are down or unhealthy",
            report.servers.len()
        );
    }
    Ok(())
}
