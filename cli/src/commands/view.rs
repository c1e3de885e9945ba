//! `lclstream view`: watch a stream in a browser (the server lives in the
//! `lclstream-viewer` crate; this module only parses arguments and connects).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use lclstream_partner::{PartnerClient, PartnerConfig};
use lclstream_viewer::Viewer;

/// Arguments of `lclstream view`.
#[derive(clap::Args)]
pub struct ViewArgs {
    /// NATS server URL.
    #[arg(
        long,
        env = "LCLSTREAM_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    url: String,
    /// File holding the institution's nkey seed (omit on servers without authentication).
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Institution id.
    #[arg(long)]
    institution: String,
    /// Subject filter to watch first, e.g. lcls.mfx.mfxp1234.>; the page can change it.
    #[arg(long)]
    subject: String,
    /// Array field shown as the image (default: the first 2-d or larger array).
    #[arg(long)]
    field: Option<String>,
    /// Address the HTTP server listens on. Anything but loopback exposes the
    /// institution's granted data to whoever can reach that address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
}

/// Runs the viewer until Ctrl-C.
pub async fn run(args: ViewArgs) -> anyhow::Result<()> {
    let seed = match &args.seed {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the seed file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    if !args.bind.ip().is_loopback() {
        eprintln!(
            "warning: the viewer listens on {}, not loopback: whoever reaches it sees {}'s granted data",
            args.bind, args.institution
        );
    }
    let partner = PartnerClient::connect(&PartnerConfig {
        url: args.url.clone(),
        institution: args.institution.clone(),
        seed,
    })
    .await
    .with_context(|| format!("connecting to {} as {}", args.url, args.institution))?;
    let viewer = Viewer::start_partner(partner, args.bind, &args.subject, args.field).await?;
    println!("viewer              {}", viewer.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
