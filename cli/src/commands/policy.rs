//! `lclstream policy`: validate policy directories.

use lclstream_gateway::policy::{PolicySet, PrincipalKind};

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
pub async fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { dir } => match PolicySet::load_dir(&dir) {
            Ok(set) => {
                for warning in set.warnings() {
                    eprintln!("{warning}");
                }
                let keys = set.public_keys().count();
                let kinds = |kind: PrincipalKind| {
                    set.public_keys()
                        .filter(|k| set.principal_of(k).is_some_and(|p| p.kind == kind))
                        .count()
                };
                println!(
                    "{}: ok: {} institution(s), {} agent(s), {} operator(s), {keys} key(s) \
                     ({} institution, {} agent, {} operator), {} warning(s)",
                    dir.display(),
                    set.institutions().count(),
                    set.agents().count(),
                    set.operators().count(),
                    kinds(PrincipalKind::Institution),
                    kinds(PrincipalKind::Agent),
                    kinds(PrincipalKind::Operator),
                    set.warnings().len()
                );
                Ok(())
            }
            Err(e) => {
                for d in &e.diagnostics {
                    eprintln!("{d}");
                }
                anyhow::bail!(
                    "{} has {} policy error(s)",
                    dir.display(),
                    e.errors().count()
                )
            }
        },
    }
}
