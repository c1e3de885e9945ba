//! `lclstream nats`.

use lclstream_nats::server::NatsServer;

/// nats-server subcommands.
#[derive(clap::Subcommand)]
pub enum NatsCommand {
    /// Start a local nats-server with JetStream (loopback, temporary store) until Ctrl-C.
    Server,
}

/// Runs `lclstream nats`.
pub async fn run(command: NatsCommand) -> anyhow::Result<()> {
    match command {
        NatsCommand::Server => {
            let server = tokio::task::spawn_blocking(NatsServer::start_default).await??;
            println!("nats-server running at {}", server.url());
            println!("monitoring: http://{}", server.monitor_addr());
            println!("store and log: {}", server.dir().display());
            println!("press Ctrl-C to stop");
            tokio::signal::ctrl_c().await?;
            drop(server);
            Ok(())
        }
    }
}
