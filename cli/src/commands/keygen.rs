//! `lclstream keygen`: create an nkey pair (seed written private, public key printed).

use std::path::PathBuf;

use lclstream_gateway::keys::{self, KeyKind};

/// Arguments of `lclstream keygen`.
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// What the key is for: `institution`, `agent`, `operator` (user keys for
    /// policies), `service` (a gateway connection), `issuer` (callout signing
    /// account key) or `xkey` (callout encryption key).
    #[arg(long, default_value = "institution")]
    pub kind: String,
    /// Directory the key files are written to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Key name: files are `<out>/<name>.nk` (seed, mode 0600) and `<out>/<name>.pub`.
    #[arg(long)]
    pub name: String,
}

/// Runs `lclstream keygen`: prints the public key on stdout, the file paths on stderr.
pub async fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let kind = KeyKind::parse(&args.kind).map_err(anyhow::Error::msg)?;
    let written = keys::generate(&args.out, &args.name, kind)?;
    eprintln!(
        "seed:   {} (mode 0600: keep it secret, never commit it)",
        written.seed_path.display()
    );
    eprintln!("public: {}", written.public_path.display());
    println!("{}", written.public_key);
    Ok(())
}
