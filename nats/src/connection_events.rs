//! Connection events logged with the server URL they concern.
//!
//! async-nats reports a failed (re)connection attempt as a bare `IO error`;
//! with several servers, sites and components on one host, an operator needs
//! to know which URL failed and which connection it was.

use async_nats::{ConnectOptions, Event};

/// Logs `options`' connection events (connected, disconnected, errors) with
/// `url` and the connection's `name`; errors and disconnections at warn.
pub fn log_events_with_url(options: ConnectOptions, url: &str, name: &str) -> ConnectOptions {
    let url = url.to_string();
    let name = name.to_string();
    options.event_callback(move |event| {
        let url = url.clone();
        let name = name.clone();
        async move {
            match &event {
                Event::Connected => tracing::info!(%url, connection = %name, "connected"),
                Event::Disconnected
                | Event::ClientError(_)
                | Event::ServerError(_)
                | Event::SlowConsumer(_)
                | Event::LameDuckMode => {
                    tracing::warn!(%url, connection = %name, "NATS {event}")
                }
                _ => tracing::debug!(%url, connection = %name, "NATS {event}"),
            }
        }
    })
}
