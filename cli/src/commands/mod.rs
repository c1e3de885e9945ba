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

/// How a partner command reaches the gateway as an institution
/// (`--url`, `--seed`, `--institution`).
#[derive(clap::Args, Clone)]
pub struct PartnerConnection {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long,
        env = "LCLSTREAM_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    url: String,
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
            url: self.url.clone(),
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
