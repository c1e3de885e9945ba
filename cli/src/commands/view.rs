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
    #[command(flatten)]
    server: super::ServerUrl,
    /// File holding the nkey seed: the institution's, or with --stream an
    /// operator's (omit on servers without authentication).
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Institution id (a partner's view, through the gateway).
    #[arg(long, required_unless_present = "stream", conflicts_with = "stream")]
    institution: Option<String>,
    /// Operator's view: watch this stream (e.g. LCLS_MFX) directly with
    /// facility credentials, on a consumer of the viewer's own.
    #[arg(long)]
    stream: Option<String>,
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
    let seed = super::read_seed(args.seed.as_deref())?;
    let who = match (&args.institution, &args.stream) {
        (Some(institution), _) => format!("{institution}'s granted data"),
        (None, Some(stream)) => format!("stream {stream}"),
        (None, None) => unreachable!("clap requires --institution or --stream"),
    };
    if !args.bind.ip().is_loopback() {
        eprintln!(
            "warning: the viewer listens on {}, not loopback: whoever reaches it sees {who}",
            args.bind
        );
    }
    let viewer = match (&args.institution, &args.stream) {
        (Some(institution), _) => {
            let partner = PartnerClient::connect(&PartnerConfig {
                url: args.server.url.clone(),
                institution: institution.clone(),
                seed,
            })
            .await
            .with_context(|| format!("connecting to {} as {institution}", args.server.url))?;
            Viewer::start_partner(partner, args.bind, &args.subject, args.field).await?
        }
        (None, Some(stream)) => {
            let client = args.server.connect(seed, "lclstream-view").await?;
            Viewer::start_operator(client, stream, args.bind, &args.subject, args.field).await?
        }
        (None, None) => unreachable!("clap requires --institution or --stream"),
    };
    println!("viewer              {}", viewer.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
