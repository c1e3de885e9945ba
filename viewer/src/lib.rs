//! `lclstream view`: a small HTTP server that shows a stream as it arrives.
//!
//! Data flows one way: a [`feed`] pulls events (as a partner, through the
//! gateway, on its own consumer) into the bounded [`state::ViewState`]; the
//! [`http`] server renders snapshots of that state for browsers. A slow
//! browser never holds events back: it only ever sees the latest frame and
//! fixed-size trend and rate windows.

pub mod feed;
pub mod frame;
pub mod http;
pub mod state;

pub use feed::{Access, PartnerFeed, Selection};
pub use http::{serve, ViewerHandle};
pub use state::ViewState;

use std::net::SocketAddr;
use std::sync::Arc;

use lclstream_partner::PartnerClient;

/// A running viewer: its HTTP server and the feed behind it.
pub struct Viewer {
    http: ViewerHandle,
    _feed: PartnerFeed,
}

impl Viewer {
    /// Serves `bind` with the events of `source` (a subject filter) pulled
    /// through the gateway as `partner`, showing array field `field` (the
    /// first image-like field when `None`).
    pub async fn start_partner(
        partner: PartnerClient,
        bind: SocketAddr,
        source: &str,
        field: Option<String>,
    ) -> anyhow::Result<Viewer> {
        Viewer::start(partner, Access::Partner, bind, source, field).await
    }

    /// Serves `bind` with the events of `source` on `stream`, read by a
    /// facility operator (`client` holds facility credentials) through a
    /// consumer of its own.
    pub async fn start_operator(
        client: async_nats::Client,
        stream: &str,
        bind: SocketAddr,
        source: &str,
        field: Option<String>,
    ) -> anyhow::Result<Viewer> {
        let operator = PartnerClient::from_client(client, "operator");
        let access = Access::Operator {
            stream: stream.to_string(),
        };
        Viewer::start(operator, access, bind, source, field).await
    }

    async fn start(
        client: PartnerClient,
        access: Access,
        bind: SocketAddr,
        source: &str,
        field: Option<String>,
    ) -> anyhow::Result<Viewer> {
        let mode = match access {
            Access::Partner => "partner",
            Access::Operator { .. } => "operator",
        };
        let state = Arc::new(ViewState::new(mode, source, field));
        let (selection, chosen) = tokio::sync::watch::channel(source.to_string());
        let http = serve(bind, state.clone(), selection).await?;
        let feed = PartnerFeed::start(client, access, state, chosen);
        Ok(Viewer { http, _feed: feed })
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        self.http.url()
    }

    /// The address the page is served on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.http.addr()
    }
}
