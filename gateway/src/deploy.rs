//! `lclstream init`: a complete single-host deployment written to one directory.
//!
//! Everything a facility needs to run lclstream on one host, production-shaped:
//! the gateway's keys, an agent and an operator key, an example partner
//! institution (its key and policy), the nats-server configuration with its
//! accounts and the gateway's auth callout (rendered by
//! [`callout_server_blocks`], the same code the tests and the demo run),
//! JetStream fsyncing every write before acknowledging it, the gateway and
//! agent configurations, and a README with the commands that start it.
//!
//! Layout of the directory:
//!
//! ```text
//! README.md              start commands
//! nats/server.conf       nats-server configuration (JetStream in nats/jetstream)
//! gateway.toml           gateway configuration (state/, log/)
//! agent.toml             agent configuration (spool in agent/spool, watches data/<experiment>/r0001)
//! keys/gateway/          the gateway's keys (callout issuer, xkey, its users)
//! keys/<agent>.nk        the agent's seed        (.pub: its public key)
//! keys/<operator>.nk     an operator's seed
//! keys/<institution>.nk  the example institution's seed (in production the
//!                        institution keeps it and sends only the public key)
//! policies/              <institution>.toml and roles.toml
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use lclstream_nats::server::{JetStreamConfig, ServerConfig};
use lclstream_nats::subjects::{experiment_filter, stream_name};

use crate::auth::{callout_server_blocks, CalloutServerSettings};
use crate::keys::{self, GatewayKeys, KeyKind};
use crate::policy::{Grant, InstitutionKey, InstitutionPolicy, Quotas};

/// What `init` writes; every field has a default that runs on one host.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Address the server listens on (clients connect to it).
    pub host: String,
    /// Client port.
    pub port: u16,
    /// HTTP monitoring port.
    pub monitor_port: u16,
    /// Instrument of the example agent (lower case, e.g. `mfx`).
    pub instrument: String,
    /// Experiment of the example agent.
    pub experiment: String,
    /// Id of the example partner institution.
    pub institution: String,
    /// JetStream storage budget of the server, bytes (`max_file_store`).
    pub max_file_store: u64,
    /// Largest size of the instrument's stream, bytes. Each stream reserves
    /// this much of `max_file_store`: the budget divided by this is how many
    /// instruments the server can hold.
    pub stream_max_bytes: u64,
    /// `jetstream { sync_interval }`: `always` (the default) fsyncs each
    /// write before acknowledging it.
    pub sync_interval: String,
    /// Address of the gateway's Prometheus endpoint.
    pub gateway_metrics: String,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            host: "127.0.0.1".into(),
            port: 4222,
            monitor_port: 8222,
            instrument: "mfx".into(),
            experiment: "mfxp1234".into(),
            institution: "example-university".into(),
            max_file_store: 64 * GIB,
            stream_max_bytes: 8 * GIB,
            sync_interval: "always".into(),
            gateway_metrics: "127.0.0.1:9465".into(),
        }
    }
}

const GIB: u64 = 1024 * 1024 * 1024;
const AGENT: &str = "daq";
const OPERATOR: &str = "oncall";

/// The files `init` wrote.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The deployment directory (absolute).
    pub dir: PathBuf,
    /// nats-server configuration.
    pub server_config: PathBuf,
    /// Gateway configuration.
    pub gateway_config: PathBuf,
    /// Agent configuration.
    pub agent_config: PathBuf,
    /// The README with the start commands.
    pub readme: PathBuf,
    /// The client URL.
    pub url: String,
}

fn check_token(what: &str, value: &str) -> anyhow::Result<()> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!("{what} {value:?} must be lower-case letters, digits, '-' or '_'");
    }
    Ok(())
}

/// Writes a deployment into `dir`, which must be missing or empty (nothing
/// is ever overwritten: it holds keys).
pub fn init(dir: &Path, options: &InitOptions) -> anyhow::Result<Deployment> {
    check_token("instrument", &options.instrument)?;
    check_token("experiment", &options.experiment)?;
    check_token("institution", &options.institution)?;
    if options.stream_max_bytes == 0 || options.stream_max_bytes > options.max_file_store {
        bail!(
            "stream max_bytes ({}) must be between 1 and the server's max_file_store ({})",
            options.stream_max_bytes,
            options.max_file_store
        );
    }
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty; give a new or empty directory (init never overwrites keys)",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    for sub in ["nats/jetstream", "state", "log", "agent/spool", "policies"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    let data_dir = dir.join("data").join(&options.experiment).join("r0001");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    // Keys.
    let keys_dir = dir.join("keys");
    let gateway_keys_dir = keys_dir.join("gateway");
    let gateway_keys = GatewayKeys::load_or_generate(&gateway_keys_dir, true)?;
    let agent = keys::generate(&keys_dir, AGENT, KeyKind::Agent)?;
    let operator = keys::generate(&keys_dir, OPERATOR, KeyKind::Operator)?;
    let partner = keys::generate(&keys_dir, &options.institution, KeyKind::Institution)?;

    // Policies.
    let policies = dir.join("policies");
    write_policies(
        &policies,
        options,
        &partner.public_key,
        &agent.public_key,
        &operator.public_key,
    )?;

    // nats-server.
    let url = format!("nats://{}:{}", options.host, options.port);
    let mut server = ServerConfig::loopback(
        "lclstream-1",
        options.port,
        options.monitor_port,
        dir.join("nats/jetstream"),
    );
    server.host = options.host.clone();
    server.jetstream = Some(JetStreamConfig {
        store_dir: dir.join("nats/jetstream"),
        domain: None,
        max_memory: 256 * 1024 * 1024,
        max_file: options.max_file_store,
        sync_interval: Some(options.sync_interval.clone()),
    });
    server
        .blocks
        .extend(callout_server_blocks(&CalloutServerSettings::from_keys(
            &gateway_keys,
        )));
    let server_config = dir.join("nats/server.conf");
    let header = "# nats-server configuration written by `lclstream init`.\n\
                  # Accounts AUTH (callout), LCLS (facility), PARTNERS (institutions), SYS;\n\
                  # every connection not listed in auth_users is authorized by the gateway.\n";
    write(&server_config, &format!("{header}{}", server.render()))?;

    // Gateway.
    let gateway_config = dir.join("gateway.toml");
    write(
        &gateway_config,
        &gateway_config_text(&GatewayFile {
            origin: "`lclstream init`",
            url: url.clone(),
            ca_file: None,
            policies: policies.clone(),
            keys: gateway_keys_dir.clone(),
            audit: dir.join("log/audit.jsonl"),
            metrics: Some(options.gateway_metrics.clone()),
            quota: GatewayQuota::Local {
                state_file: dir.join("state/quota.json"),
            },
        }),
    )?;

    // Agent.
    let agent_config = dir.join("agent.toml");
    write(
        &agent_config,
        &format!(
            r#"# lclstream agent configuration written by `lclstream init`
# (every key is documented in agent/agent.example.toml).
instrument = {instrument}
experiment = {experiment}

[nats]
url = {url}
nkey_seed_file = {seed}
name = "lclstream-agent-{AGENT}"

[stream]
create = true
# Each stream reserves max_bytes of the server's max_file_store ({budget}
# bytes in nats/server.conf): give each instrument a share that fits.
max_bytes = {stream_bytes}
replicas = 1

[spool]
dir = {spool}
fsync = true

[[sources]]
name = "jungfrau"
run = 1
[sources.hdf5]
watch_dir = {watch}
pattern = "*.h5"
preset = "sample"
"#,
            instrument = toml_str(&options.instrument),
            experiment = toml_str(&options.experiment),
            url = toml_str(&url),
            seed = toml_path(&agent.seed_path),
            budget = options.max_file_store,
            stream_bytes = options.stream_max_bytes,
            spool = toml_path(&dir.join("agent/spool")),
            watch = toml_path(&data_dir),
        ),
    )?;

    let readme = dir.join("README.md");
    write(
        &readme,
        &readme_text(&dir, options, &url, &partner.seed_path, &data_dir),
    )?;
    Ok(Deployment {
        dir,
        server_config,
        gateway_config,
        agent_config,
        readme,
        url,
    })
}

fn write_policies(
    dir: &Path,
    options: &InitOptions,
    partner: &str,
    agent: &str,
    operator: &str,
) -> anyhow::Result<()> {
    let policy = InstitutionPolicy {
        id: options.institution.clone(),
        name: "Example University (edit: the partner's full name)".into(),
        keys: vec![InstitutionKey {
            public: partner.into(),
            comment: "example key written by lclstream init".into(),
            revoked: false,
            expires: None,
        }],
        grants: vec![Grant {
            stream: stream_name(&options.instrument),
            subjects: vec![experiment_filter(&options.instrument, &options.experiment)],
            not_before: None,
            not_after: None,
        }],
        quotas: Quotas::default(),
    };
    write(
        &dir.join(format!("{}.toml", options.institution)),
        &toml::to_string(&policy).context("rendering the example policy")?,
    )?;
    let roles = format!(
        "[[agent]]\nid = \"{AGENT}\"\nname = \"{instrument} data acquisition agent\"\n\
         instruments = [\"{instrument}\"]\n\
         keys = [{{ public = \"{agent}\", comment = \"written by lclstream init\" }}]\n\n\
         [[operator]]\nid = \"{OPERATOR}\"\nname = \"Facility on-call operators\"\n\
         keys = [{{ public = \"{operator}\", comment = \"written by lclstream init\" }}]\n",
        instrument = options.instrument,
    );
    write(&dir.join("roles.toml"), &roles)
}

fn readme_text(
    dir: &Path,
    options: &InitOptions,
    url: &str,
    partner_seed: &Path,
    data_dir: &Path,
) -> String {
    let d = dir.display();
    let mut text = String::new();
    let _ = write!(
        text,
        r#"# lclstream deployment in {d}

Written by `lclstream init`. Start each command in its own terminal (or as a
service), in this order. Commands ending in `&` keep running.

```sh
nats-server -c {d}/nats/server.conf &
lclstream gateway --config {d}/gateway.toml &
lclstream agent --config {d}/agent.toml &
```

Wait for each to be up (nats-server logs `Server is ready`, the gateway
`gateway running`, the agent `stream ready`). The agent watches `{data}` for
new HDF5 files (`sample` layout) and publishes them into stream
`{stream}`, which it creates at start-up. Write a sample run there to try it:

```sh
lclstream sample --layout sample --events 200 --out {data}/sample.h5
```

The example partner institution `{inst}` then pulls it through the gateway
(in production the institution holds its seed and runs this at its site):

```sh
lclstream pull --url {url} --seed {seed} --institution {inst} --subject {filter} --hdf5 {d}/received.h5 --max-events 200 --idle-timeout 60
```

What is where:

- `nats/server.conf`: accounts `AUTH`, `LCLS`, `PARTNERS`, `SYS` and the auth
  callout; JetStream in `nats/jetstream` with `sync_interval: {sync}` (with
  `always` an acknowledged message is on disk: the agent deletes its spooled
  copy only then) and a storage budget of {budget} bytes, of which each
  instrument's stream reserves {stream_bytes} (`[stream] max_bytes` in
  `agent.toml`).
- `keys/gateway/`: the gateway's keys; `keys/{AGENT}.nk`, `keys/{OPERATOR}.nk`,
  `keys/{inst}.nk`: agent, operator and example institution seeds (mode 0600).
- `policies/`: `{inst}.toml` (grant, quotas) and `roles.toml` (agent, operator).
- `log/audit.jsonl`: every gateway decision; `state/quota.json`: quota counters.
"#,
        data = data_dir.display(),
        stream = stream_name(&options.instrument),
        inst = options.institution,
        seed = partner_seed.display(),
        filter = experiment_filter(&options.instrument, &options.experiment),
        sync = options.sync_interval,
        budget = options.max_file_store,
        stream_bytes = options.stream_max_bytes,
    );
    text
}

/// What one gateway's configuration file says.
pub struct GatewayFile {
    /// What wrote it, for the file's first line.
    pub origin: &'static str,
    /// Server URL(s), comma-separated.
    pub url: String,
    /// CA certificate of the servers' TLS, if they use TLS.
    pub ca_file: Option<PathBuf>,
    pub policies: PathBuf,
    pub keys: PathBuf,
    pub audit: PathBuf,
    /// Prometheus listen address, if any.
    pub metrics: Option<String>,
    pub quota: GatewayQuota,
}

/// Where a gateway keeps its quota counters.
pub enum GatewayQuota {
    /// One gateway: a local state file.
    Local { state_file: PathBuf },
    /// One of several gateways: the shared key-value buckets.
    Shared { replicas: usize, gateway_id: String },
}

/// The text of a gateway configuration file (every key is documented in
/// gateway/gateway.example.toml).
pub fn gateway_config_text(file: &GatewayFile) -> String {
    let quota = match &file.quota {
        GatewayQuota::Local { state_file } => format!("state_file = {}\n", toml_path(state_file)),
        GatewayQuota::Shared {
            replicas,
            gateway_id,
        } => format!(
            "# One of several gateways: counters, locks and the meter are shared\n\
             # through JetStream (docs/operators.md, \"Several gateways\").\n\
             shared = true\nreplicas = {replicas}\ngateway_id = {}\n",
            toml_str(gateway_id)
        ),
    };
    let metrics = match &file.metrics {
        Some(listen) => format!(
            "\n[metrics]\n# Prometheus endpoint: GET /metrics (see docs/grafana-dashboard.json).\nlisten = {}\n",
            toml_str(listen)
        ),
        None => String::new(),
    };
    let ca = match &file.ca_file {
        Some(path) => format!("ca_file = {}\n", toml_path(path)),
        None => String::new(),
    };
    format!(
        r#"# lclstream gateway configuration written by {origin}
# (every key is documented in gateway/gateway.example.toml).

[nats]
url = {url}
{ca}
[policies]
dir = {policies}
reload_secs = 5

[quota]
{quota}
[audit]
file = {audit}

[auth]
keys_dir = {keys}
callout = true
encrypt = true
user_ttl_secs = 3600
{metrics}"#,
        origin = file.origin,
        url = toml_str(&file.url),
        policies = toml_path(&file.policies),
        audit = toml_path(&file.audit),
        keys = toml_path(&file.keys),
    )
}

fn toml_str(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

fn toml_path(path: &Path) -> String {
    toml_str(&path.display().to_string())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::GatewayConfig;

    #[test]
    fn writes_a_consistent_deployment_and_refuses_a_used_directory() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("site");
        let deployment = init(&dir, &InitOptions::default()).unwrap();
        let server = std::fs::read_to_string(&deployment.server_config).unwrap();
        assert!(server.contains("auth_callout"));
        assert!(server.contains("sync_interval: \"always\""));
        let issuer = std::fs::read_to_string(dir.join("keys/gateway/issuer.pub")).unwrap();
        assert!(server.contains(issuer.trim()));
        let gateway = GatewayConfig::from_file(&deployment.gateway_config).unwrap();
        assert!(gateway.auth.is_some());
        crate::gateway::load_policies(&gateway.policies.dir).unwrap();
        let readme = std::fs::read_to_string(&deployment.readme).unwrap();
        assert!(readme.contains("nats-server -c"));
        let err = init(&dir, &InitOptions::default()).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }
}
