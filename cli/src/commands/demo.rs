//! `lclstream demo`.

/// Arguments of `lclstream demo`.
#[derive(clap::Args)]
pub struct DemoArgs {}

/// Runs `lclstream demo`.
pub async fn run(_args: DemoArgs) -> anyhow::Result<()> {
    super::not_yet("demo")
}
