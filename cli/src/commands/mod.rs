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
