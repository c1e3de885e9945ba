//! One module per subcommand.

pub mod agent;
pub mod bench;
pub mod demo;
pub mod gateway;
pub mod gateways;
pub mod init;
pub mod jobs;
pub mod keygen;
pub mod nats;
pub mod policy;
pub mod pull;
pub mod sample;
pub mod view;
pub mod worker;

/// `--url`: the NATS server(s) a client command connects to.
#[derive(clap::Args, Clone)]
pub struct ServerUrl {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "url",
        env = "LCLSTREAM_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
}

impl ServerUrl {
    /// A plain NATS connection named `name`, with the nkey `seed` when given.
    pub async fn connect(
        &self,
        seed: Option<String>,
        name: &str,
    ) -> anyhow::Result<async_nats::Client> {
        use anyhow::Context as _;
        let options = match seed {
            Some(seed) => async_nats::ConnectOptions::with_nkey(seed),
            None => async_nats::ConnectOptions::new(),
        };
        options
            .name(name)
            .connect(lclstream_nats::server_urls::server_urls(&self.url))
            .await
            .with_context(|| format!("connecting to {}", self.url))
    }
}

/// How a partner command reaches the gateway as an institution
/// (`--url`, `--seed`, `--institution`).
#[derive(clap::Args, Clone)]
pub struct PartnerConnection {
    #[command(flatten)]
    server: ServerUrl,
    /// File holding the institution's nkey seed (omit on servers without authentication).
    #[arg(long)]
    seed: Option<std::path::PathBuf>,
    /// Institution id.
    #[arg(long, env = "LCLSTREAM_INSTITUTION")]
    institution: String,
}

impl PartnerConnection {
    /// The client configuration, with the seed file read (so that a missing
    /// one is reported before anything else happens).
    pub fn config(&self) -> anyhow::Result<lclstream_partner::PartnerConfig> {
        Ok(lclstream_partner::PartnerConfig {
            url: self.server.url.clone(),
            institution: self.institution.clone(),
            seed: read_seed(self.seed.as_deref())?,
        })
    }

    /// Connects as the institution.
    pub async fn connect(&self) -> anyhow::Result<lclstream_partner::PartnerClient> {
        Ok(lclstream_partner::PartnerClient::connect(&self.config()?).await?)
    }
}

/// The nkey seed in `path` (a `--seed` file), trimmed; `None` without one.
pub fn read_seed(path: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    use anyhow::Context as _;
    path.map(|path| {
        std::fs::read_to_string(path)
            .map(|text| text.trim().to_string())
            .with_context(|| format!("reading seed file {}", path.display()))
    })
    .transpose()
}
