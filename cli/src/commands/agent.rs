//! `lclstream agent`.

/// Arguments of `lclstream agent`.
#[derive(clap::Args)]
pub struct AgentArgs {}

/// Runs `lclstream agent`.
pub async fn run(_args: AgentArgs) -> anyhow::Result<()> {
    super::not_yet("agent")
}
