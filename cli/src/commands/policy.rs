//! `lclstream policy`.

/// Policy subcommands.
#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate every policy file in a directory.
    Check {
        /// Directory of policy files.
        dir: std::path::PathBuf,
    },
}

/// Runs `lclstream policy`.
pub async fn run(_command: PolicyCommand) -> anyhow::Result<()> {
    super::not_yet("policy")
}
