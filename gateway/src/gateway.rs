//! The gateway runner: configuration, start-up and shutdown of the request
//! service and the byte meter.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use lclstream_gateway::gateway::{Gateway, GatewayConfig};
//! let config = GatewayConfig::from_file("gateway.toml".as_ref())?;
//! let handle = Gateway::start(config).await?;
//! // ... partners request datasets ...
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::audit::{Audit, AuditConfig, AuditRecord, Decision};
use crate::auth::{AuthAction, AuthCallout, AuthDecision, AuthDecisionSink, CalloutSettings};
use crate::keys::GatewayKeys;
use crate::policy::{PolicySet, PolicyStore, WatcherHandle};
use crate::quota::{Clock, QuotaBook, SystemClock};
use crate::service::meter::{Meter, MeterConfig, TickReport};
use crate::service::notices::Notifier;
use crate::service::{PolicyMap, ServiceContext, ServiceHandle, SharedPolicies};
use crate::shared_state::SharedState;
use lclstream_nats::protocol::naming::{
    partner_api_prefix, FACILITY_API_PREFIX, GATEWAY_INBOX_PREFIX,
};

/// How the gateway connects to NATS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// File holding the gateway's user nkey seed (`SU...`).
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and seed), instead of an nkey seed.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// User name (with `password`), instead of keys.
    #[serde(default)]
    pub user: Option<String>,
    /// Password of `user`.
    #[serde(default)]
    pub password: Option<String>,
    /// CA certificate (PEM) the servers' TLS certificates are checked
    /// against, when it is not in the system's roots; implies TLS.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Where institution policies are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// Directory of `<institution>.toml` files (and `roles.toml`).
    pub dir: PathBuf,
    /// Seconds between checks of the directory for changes (0: never reload).
    #[serde(default = "default_reload_secs")]
    pub reload_secs: u64,
}

fn default_reload_secs() -> u64 {
    5
}

/// The auth callout; without this section the gateway runs without it
/// (a server with static users, or development without authorization).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Directory of the gateway's keys (issuer, xkey, callout, service and
    /// system users); created with fresh keys when missing.
    pub keys_dir: PathBuf,
    /// Seal callout traffic with an xkey.
    #[serde(default = "default_true")]
    pub encrypt: bool,
    /// Lifetime of the user JWTs the callout issues, in seconds.
    #[serde(default = "default_user_ttl")]
    pub user_ttl_secs: u64,
    /// Run the auth callout in this gateway (default). With `false` the
    /// gateway still connects as its own users from `keys_dir` (requests,
    /// replies, consumers) while a callout runs elsewhere.
    #[serde(default = "default_true")]
    pub callout: bool,
    /// Public keys of facility administrators configured as static users of
    /// the facility account (`CalloutServerSettings::admin_users`): the
    /// sweep that closes connections of withdrawn keys leaves them alone.
    #[serde(default)]
    pub admin_keys: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn default_user_ttl() -> u64 {
    3600
}

/// The request service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Queue group of the endpoints; gateways sharing it share the requests.
    pub queue_group: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            queue_group: "lclstream-gateway".into(),
        }
    }
}

/// Quota bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// File where the counters are saved after each metering pass and read at
    /// start-up, so that a restart does not reset the day's usage; none to keep them in memory.
    pub state_file: Option<PathBuf>,
    /// Keep counters, decision locks and the meter's leadership in JetStream
    /// key-value buckets shared by all gateways of the facility (required
    /// to run more than one; see docs/operators.md "Several gateways").
    pub shared: bool,
    /// Replicas of the shared buckets (like the facility streams: 1 on one server, 3 in a cluster).
    pub replicas: usize,
    /// This gateway's name in heartbeats and the meter leadership; default host and process id.
    pub gateway_id: Option<String>,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of `GET /metrics` (e.g. `127.0.0.1:9465`); none for no endpoint.
    pub listen: Option<String>,
}

/// The whole gateway configuration (`gateway.toml`; see `gateway/gateway.example.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// NATS connection.
    pub nats: NatsConfig,
    /// Policies.
    pub policies: PoliciesConfig,
    /// Request service.
    #[serde(default)]
    pub service: ServiceConfig,
    /// Byte meter.
    #[serde(default)]
    pub meter: MeterConfig,
    /// Quota bookkeeping.
    #[serde(default)]
    pub quota: QuotaConfig,
    /// Audit log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The auth callout (absent: not run).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Publish jobs (`docs/jobs.md`).
    #[serde(default)]
    pub jobs: crate::jobs::JobsConfig,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

impl GatewayConfig {
    /// Reads a TOML configuration file; relative paths in it are relative to the file.
    pub fn from_file(path: &Path) -> anyhow::Result<GatewayConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: GatewayConfig =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.policies.dir);
        for p in [
            config.nats.nkey_seed_file.as_mut(),
            config.nats.creds_file.as_mut(),
            config.nats.ca_file.as_mut(),
            config.audit.file.as_mut(),
            config.quota.state_file.as_mut(),
            config.auth.as_mut().map(|a| &mut a.keys_dir),
        ]
        .into_iter()
        .flatten()
        {
            rebase(p);
        }
        Ok(config)
    }

    /// A configuration for a local server without authentication (tests, demos).
    pub fn local(url: &str, policies_dir: &Path) -> GatewayConfig {
        GatewayConfig {
            nats: NatsConfig {
                url: url.to_string(),
                nkey_seed_file: None,
                creds_file: None,
                user: None,
                password: None,
                ca_file: None,
            },
            policies: PoliciesConfig {
                dir: policies_dir.to_path_buf(),
                reload_secs: default_reload_secs(),
            },
            service: ServiceConfig::default(),
            meter: MeterConfig::default(),
            quota: QuotaConfig::default(),
            audit: AuditConfig::default(),
            auth: None,
            jobs: crate::jobs::JobsConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// The institutions of a validated policy set, keyed by id.
pub fn institutions_of(set: &PolicySet) -> PolicyMap {
    set.institutions()
        .map(|p| (p.id.clone(), p.clone()))
        .collect::<HashMap<_, _>>()
}

/// Loads and validates the policy directory (errors name file and field).
pub fn load_policies(dir: &Path) -> anyhow::Result<PolicyStore> {
    PolicyStore::load(dir).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Connects to NATS as configured.
pub async fn connect(
    config: &NatsConfig,
    service_seed: Option<String>,
    name: &str,
) -> anyhow::Result<async_nats::Client> {
    let mut options = lclstream_nats::connection_events::log_events_with_url(
        async_nats::ConnectOptions::new(),
        &config.url,
        name,
    )
    .name(name)
    .custom_inbox_prefix(GATEWAY_INBOX_PREFIX);
    if let Some(ca) = &config.ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some(seed) = service_seed {
        options = options.nkey(seed);
    } else if let Some(path) = &config.nkey_seed_file {
        let seed = std::fs::read_to_string(path)
            .with_context(|| format!("reading nkey seed {}", path.display()))?;
        options = options.nkey(seed.trim().to_string());
    } else if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("reading credentials {}", path.display()))?;
    } else if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    options
        .connect(lclstream_nats::server_urls::server_urls(&config.url))
        .await
        .with_context(|| format!("connecting to {}", config.url))
}

/// Starts gateways.
pub struct Gateway;

impl Gateway {
    /// Connects, loads policies and starts the request service and the meter.
    pub async fn start(config: GatewayConfig) -> anyhow::Result<GatewayHandle> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Like [`Gateway::start`] with quota windows read from `clock` (tests).
    pub async fn start_with_clock(
        config: GatewayConfig,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<GatewayHandle> {
        let store = load_policies(&config.policies.dir)?;
        let policies: SharedPolicies = Arc::new(RwLock::new(institutions_of(&store.current())));
        let audit = Arc::new(Audit::open(&config.audit).context("opening the audit log")?);
        let quotas = Arc::new(QuotaBook::new(clock));
        if let Some(path) = &config.quota.state_file {
            // Create the state file's directory now, so that a missing one is
            // an error at start-up naming it, not a warning every metering pass.
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!(
                        "creating {} (the directory of quota.state_file)",
                        parent.display()
                    )
                })?;
            }
            if path.exists() {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let saved = serde_json::from_str(&text)
                    .with_context(|| format!("in quota state {}", path.display()))?;
                quotas
                    .restore(saved)
                    .with_context(|| format!("in quota state {}", path.display()))?;
            }
        }
        let keys = match &config.auth {
            Some(auth) => Some(
                GatewayKeys::load_or_generate(&auth.keys_dir, auth.encrypt)
                    .map_err(|e| anyhow::anyhow!("gateway keys: {e}"))?,
            ),
            None => None,
        };
        // With the callout, the request service is the gateway's own service user.
        let service_seed = keys.as_ref().map(|k| GatewayKeys::seed_of(&k.service_user));
        let callout = match (&config.auth, &keys) {
            (Some(auth), Some(keys)) if auth.callout => Some(
                AuthCallout::connect(
                    &config.nats.url,
                    keys,
                    store.clone(),
                    CalloutSettings {
                        user_ttl: Duration::from_secs(auth.user_ttl_secs.max(60)),
                        exempt_users: auth.admin_keys.clone(),
                        ..Default::default()
                    },
                    audit_sink(audit.clone()),
                )
                .await
                .context("starting the auth callout")?,
            ),
            _ => None,
        };
        // With the callout, institutions live in their own account: the
        // gateway meets them there through its partner-side user.
        let front_seed = keys.as_ref().map(|k| GatewayKeys::seed_of(&k.front_user));
        let connections = async {
            let client = connect(&config.nats, service_seed, "lclstream-gateway").await?;
            let front = match front_seed {
                Some(seed) => {
                    connect(&config.nats, Some(seed), "lclstream-gateway-partners").await?
                }
                None => client.clone(),
            };
            anyhow::Ok((client, front))
        }
        .await;
        let (client, front) = match connections {
            Ok(connections) => connections,
            Err(e) => {
                if let Some(callout) = callout {
                    callout.shutdown().await;
                }
                return Err(e);
            }
        };
        let shared = if config.quota.shared {
            let id = config
                .quota
                .gateway_id
                .clone()
                .unwrap_or_else(crate::shared_state::default_gateway_id);
            let lease = meter_lease(&config.meter);
            let shared = SharedState::open(&client, id, config.quota.replicas, lease)
                .await
                .map_err(|e| anyhow::anyhow!("opening the shared gateway state: {e}"))?;
            quotas.attach_shared(shared.usage());
            Some(shared)
        } else {
            None
        };
        let notifier = Arc::new(Notifier::new(
            front.clone(),
            keys.as_ref()
                .and_then(|k| nkeys::KeyPair::from_seed(&GatewayKeys::seed_of(&k.notice_key)).ok()),
        ));
        let partner_api = if keys.is_some() {
            partner_api_prefix()
        } else {
            FACILITY_API_PREFIX.to_string()
        };
        // Policy reloads (validated by the store) replace the service's view.
        let watcher = (config.policies.reload_secs > 0)
            .then(|| store.spawn_watcher(Duration::from_secs(config.policies.reload_secs)));
        let sync_task = {
            let mut changes = store.subscribe();
            let policies = policies.clone();
            tokio::spawn(async move {
                loop {
                    match changes.recv().await {
                        Ok(change) => {
                            *policies.write().unwrap_or_else(|p| p.into_inner()) =
                                institutions_of(&change.set);
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            })
        };
        let meter = Arc::new(Meter::new(
            client.clone(),
            notifier.clone(),
            policies.clone(),
            quotas.clone(),
            audit.clone(),
            config.meter.clone(),
        ));
        let context = Arc::new(ServiceContext::new(
            client.clone(),
            front.clone(),
            notifier,
            partner_api,
            policies.clone(),
            quotas.clone(),
            audit.clone(),
            meter.clone(),
        ));
        if let Some(shared) = &shared {
            context.attach_shared(shared.clone());
        }
        let service = context
            .clone()
            .start(&config.service.queue_group)
            .await
            .map_err(|e| anyhow::anyhow!("starting the request service: {e}"))?;
        let jobs = if config.jobs.enabled {
            Some(
                crate::jobs::JobsService::start(
                    context.clone(),
                    config.jobs.clone(),
                    &config.service.queue_group,
                )
                .await
                .map_err(|e| anyhow::anyhow!("starting the job service: {e}"))?,
            )
        } else {
            None
        };
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let metering = Arc::new(std::sync::atomic::AtomicBool::new(shared.is_none()));
        let meter_task = {
            let meter = meter.clone();
            let quotas = quotas.clone();
            let state_file = config.quota.state_file.clone();
            let shared = shared.clone();
            let metering = metering.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(meter.interval());
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let started = time::OffsetDateTime::now_utc();
                loop {
                    tokio::select! {
                        _ = interval.tick() => {}
                        _ = stop_rx.changed() => break,
                    }
                    if let Some(shared) = &shared {
                        if !lead_or_follow(shared, &meter, &metering, started).await {
                            continue;
                        }
                    }
                    if let Err(e) = meter.tick().await {
                        tracing::warn!("metering pass failed: {e}");
                    }
                    if let Some(shared) = &shared {
                        if let Err(e) = shared.save_positions(&meter.positions()).await {
                            tracing::warn!("{e}");
                        }
                    }
                    if let Some(path) = &state_file {
                        save_state(path, &quotas);
                    }
                }
            })
        };
        if let Some(listen) = &config.metrics.listen {
            let listener = tokio::net::TcpListener::bind(listen.as_str())
                .await
                .with_context(|| format!("binding metrics.listen {listen}"))?;
            // Connections per institution come from the servers' CONNZ, which
            // only the system account may ask.
            let system = match &keys {
                Some(keys) => Some(
                    connect(
                        &config.nats,
                        Some(GatewayKeys::seed_of(&keys.system_user)),
                        "lclstream-gateway-metrics",
                    )
                    .await?,
                ),
                None => None,
            };
            let sources = crate::metrics::ScrapeSources {
                policies: policies.clone(),
                quotas: quotas.clone(),
                system,
                health: crate::metrics::Health {
                    gateway_id: shared.as_ref().map(|s| s.gateway_id().to_string()),
                    callout: callout.is_some(),
                    metering: metering.clone(),
                    client: client.clone(),
                    started: time::OffsetDateTime::now_utc(),
                },
            };
            tracing::info!(address = %listener.local_addr()?, "metrics endpoint listening");
            tokio::spawn(crate::metrics::serve(
                listener,
                sources,
                stop_tx.subscribe(),
            ));
        }
        tracing::info!(
            "gateway running on {} with {} institution policies",
            config.nats.url,
            policies.read().map(|p| p.len()).unwrap_or(0)
        );
        Ok(GatewayHandle {
            config,
            store,
            watcher,
            sync_task,
            callout,
            client,
            policies,
            quotas,
            audit,
            meter,
            context,
            service: Some(service),
            jobs,
            meter_task: Some(meter_task),
            stop_tx,
            shared,
            metering,
        })
    }
}

/// Feeds the callout's decisions into the audit log.
/// How long the meter's leadership lasts without renewal: three meter
/// intervals, at least one second. A metering gateway that dies is replaced
/// within this lease plus one meter interval.
pub fn meter_lease(meter: &MeterConfig) -> Duration {
    (Duration::from_millis(meter.interval_ms.max(50)) * 3).max(Duration::from_secs(1))
}

/// One round of the meter election: takes over (continuing from the saved
/// positions) or renews, writes the heartbeat; true when this gateway meters.
async fn lead_or_follow(
    shared: &SharedState,
    meter: &Meter,
    metering: &std::sync::atomic::AtomicBool,
    started: time::OffsetDateTime,
) -> bool {
    use std::sync::atomic::Ordering;
    let leading = match shared.lead().await {
        Ok(leading) => leading,
        Err(e) => {
            tracing::warn!("meter election: {e}");
            false
        }
    };
    let was = metering.swap(leading, Ordering::SeqCst);
    if leading && !was {
        tracing::info!(gateway = shared.gateway_id(), "this gateway meters now");
        match shared.load_positions().await {
            Ok(saved) => meter.restore_positions(&saved),
            Err(e) => tracing::warn!("cannot read the previous meter's positions: {e}"),
        }
    } else if !leading && was {
        tracing::info!(gateway = shared.gateway_id(), "another gateway meters now");
    }
    if !leading {
        meter.ensure_indexers();
    }
    if let Err(e) = shared.beat(started, leading).await {
        tracing::warn!("{e}");
    }
    leading
}

fn audit_sink(audit: Arc<Audit>) -> AuthDecisionSink {
    Arc::new(move |d: AuthDecision| {
        let action = match d.action {
            AuthAction::Connect => "connect",
            AuthAction::Disconnect => "disconnect",
        };
        let decision = match (d.action, d.allowed) {
            (AuthAction::Connect, true) => Decision::Allow,
            (AuthAction::Connect, false) => Decision::Deny,
            (AuthAction::Disconnect, _) => Decision::Info,
        };
        audit.record(AuditRecord {
            ts: d.time,
            who: d.public_key.clone(),
            institution: d.institution().map(str::to_string),
            action: action.to_string(),
            decision,
            reason: d.reason.clone(),
            details: serde_json::json!({
                "principal": d.principal,
                "client_host": d.client_host,
                "client_id": d.client_id,
                "client_name": d.client_name,
                "server_id": d.server_id,
                "expires": d.expires,
            }),
        });
    })
}

fn save_state(path: &Path, quotas: &QuotaBook) {
    let temp = path.with_extension("tmp");
    let text = quotas.save().to_string();
    if let Err(e) = std::fs::write(&temp, text).and_then(|_| std::fs::rename(&temp, path)) {
        tracing::warn!("cannot save quota state to {}: {e}", path.display());
    }
}

/// A running gateway.
pub struct GatewayHandle {
    config: GatewayConfig,
    store: PolicyStore,
    watcher: Option<WatcherHandle>,
    sync_task: tokio::task::JoinHandle<()>,
    callout: Option<AuthCallout>,
    client: async_nats::Client,
    policies: SharedPolicies,
    quotas: Arc<QuotaBook>,
    audit: Arc<Audit>,
    meter: Arc<Meter>,
    context: Arc<ServiceContext>,
    service: Option<ServiceHandle>,
    jobs: Option<crate::jobs::JobsHandle>,
    meter_task: Option<tokio::task::JoinHandle<()>>,
    shared: Option<SharedState>,
    metering: Arc<std::sync::atomic::AtomicBool>,
    stop_tx: tokio::sync::watch::Sender<bool>,
}

impl GatewayHandle {
    /// The gateway's NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The policies in force (shared with the auth callout).
    pub fn policies(&self) -> SharedPolicies {
        self.policies.clone()
    }

    /// The quota counters.
    pub fn quotas(&self) -> Arc<QuotaBook> {
        self.quotas.clone()
    }

    /// The audit log.
    pub fn audit(&self) -> Arc<Audit> {
        self.audit.clone()
    }

    /// The request handlers (to call them without NATS).
    pub fn service(&self) -> Arc<ServiceContext> {
        self.context.clone()
    }

    /// The state shared with other gateways (None without `quota.shared`).
    pub fn shared(&self) -> Option<&SharedState> {
        self.shared.as_ref()
    }

    /// Whether this gateway runs the facility's byte meter.
    pub fn is_metering(&self) -> bool {
        self.metering.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs one metering and enforcement pass now.
    pub async fn meter_tick(&self) -> anyhow::Result<TickReport> {
        self.meter
            .tick()
            .await
            .map_err(|e| anyhow::anyhow!("metering pass: {e}"))
    }

    /// Highest stream sequence the meter has indexed for `stream`.
    pub fn indexed_high(&self, stream: &str) -> u64 {
        self.meter.indexed_high(stream)
    }

    /// The policy store (shared with the auth callout).
    pub fn store(&self) -> &PolicyStore {
        &self.store
    }

    /// Reads the policy directory again now; the previous policies stay in
    /// force if the new files do not validate.
    pub fn reload_policies(&self) -> anyhow::Result<usize> {
        let change = self.store.reload().map_err(|e| anyhow::anyhow!("{e}"))?;
        let fresh = institutions_of(&change.set);
        let count = fresh.len();
        *self.policies.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(count)
    }

    /// Stops the service and the meter and flushes the connection.
    pub async fn shutdown(mut self) {
        let _ = self.stop_tx.send(true);
        if let Some(task) = self.meter_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.meter.stop();
        if let Some(service) = self.service.take() {
            service.stop().await;
        }
        if let Some(shared) = &self.shared {
            // Another gateway meters from its next pass instead of after the lease.
            shared.resign().await;
        }
        if let Some(jobs) = self.jobs.take() {
            jobs.stop().await;
        }
        if let Some(callout) = self.callout.take() {
            callout.shutdown().await;
        }
        self.watcher.take();
        self.sync_task.abort();
        if let Some(path) = &self.config.quota.state_file {
            save_state(path, &self.quotas);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await;
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
        self.sync_task.abort();
        self.meter.stop();
        if let Some(task) = self.meter_task.take() {
            task.abort();
        }
        if let Some(service) = self.service.take() {
            for task in service.tasks_handles() {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_paths_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, include_str!("../gateway.example.toml")).unwrap();
        let config = GatewayConfig::from_file(&path).unwrap();
        assert_eq!(config.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(config.policies.dir, dir.path().join("../policies"));
        assert_eq!(config.audit.file, Some(dir.path().join("audit.jsonl")));
        assert_eq!(config.meter.interval_ms, 2000);
        std::fs::write(
            &path,
            "[nats]\nurl = \"x\"\n[policies]\ndir = \"p\"\nbogus = 1\n",
        )
        .unwrap();
        let error = format!("{:#}", GatewayConfig::from_file(&path).unwrap_err());
        assert!(
            error.contains("bogus") && error.contains("gateway.toml"),
            "{error}"
        );
    }

    #[test]
    fn policies_load_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = "id = \"ucsd\"\nname = \"U\"\n[[grants]]\nstream = \"LCLS_MFX\"\nsubjects = [\"lcls.mfx.e1.>\"]\n";
        std::fs::write(dir.path().join("a.toml"), good).unwrap();
        let store = load_policies(dir.path()).unwrap();
        assert_eq!(institutions_of(&store.current()).len(), 1);
        std::fs::write(
            dir.path().join("b.toml"),
            "id = \"ucsd\"\nname = \"U\"\nbogus = 1\n",
        )
        .unwrap();
        let error = format!("{:#}", load_policies(dir.path()).unwrap_err());
        assert!(
            error.contains("b.toml") && error.contains("bogus"),
            "{error}"
        );
    }
}
