//! Finding and disconnecting live connections through the system account.
//!
//! Connections authorized by the callout carry the client's public key as
//! their user name (the user JWT's `name`), so `$SYS.REQ.SERVER.PING.CONNZ`
//! filtered by user finds every connection of a key on every server, and
//! `$SYS.REQ.SERVER.<server id>.KICK` closes one.

use std::time::Duration;

use async_nats::Client;
use futures::StreamExt;
use serde::Deserialize;

/// Largest number of connections listed per server and query.
pub const CONNZ_LIMIT: usize = 4096;

/// One live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConnection {
    /// Server id (`N...`).
    pub server_id: String,
    /// Connection id on that server.
    pub cid: u64,
    /// Authorized user (the client's public key for callout users).
    pub user: String,
    /// Account.
    pub account: String,
}

#[derive(Deserialize)]
struct ZResponse {
    #[serde(default)]
    server: Option<ZServer>,
    #[serde(default)]
    data: Option<Connz>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ZServer {
    id: String,
}

#[derive(Deserialize)]
struct Connz {
    #[serde(default)]
    server_id: String,
    #[serde(default)]
    connections: Vec<ConnInfo>,
}

#[derive(Deserialize)]
struct ConnInfo {
    cid: u64,
    #[serde(default)]
    authorized_user: String,
    #[serde(default)]
    account: String,
}

/// Errors talking to the system account.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// Publishing or subscribing failed.
    #[error("system request failed: {0}")]
    Nats(String),
    /// No server answered.
    #[error("no server answered {0} within {1:?}")]
    NoAnswer(String, Duration),
}

/// Lists the live connections in `account` (of `user` only, if given) on
/// every server that answers within `first_wait`; answers are collected
/// until `quiet` passes without another.
pub async fn list_connections(
    system: &Client,
    account: &str,
    user: Option<&str>,
    first_wait: Duration,
    quiet: Duration,
) -> Result<Vec<LiveConnection>, RevokeError> {
    let inbox = system.new_inbox();
    let mut replies = system
        .subscribe(inbox.clone())
        .await
        .map_err(|e| RevokeError::Nats(e.to_string()))?;
    let mut filter = serde_json::json!({
        "auth": true,
        "account": account,
        "limit": CONNZ_LIMIT,
    });
    if let Some(user) = user {
        filter["user"] = serde_json::Value::String(user.to_string());
    }
    let subject = "$SYS.REQ.SERVER.PING.CONNZ";
    system
        .publish_with_reply(subject, inbox, filter.to_string().into())
        .await
        .map_err(|e| RevokeError::Nats(e.to_string()))?;
    let mut out = Vec::new();
    let mut wait = first_wait;
    let mut answered = false;
    // Bounded: one answer per server, and at most 1024 servers.
    for _ in 0..1024 {
        let message = match tokio::time::timeout(wait, replies.next()).await {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => break,
        };
        answered = true;
        wait = quiet;
        let Ok(response) = serde_json::from_slice::<ZResponse>(&message.payload) else {
            tracing::warn!("unreadable CONNZ answer");
            continue;
        };
        if let Some(error) = response.error {
            tracing::warn!("CONNZ answered with an error: {error}");
            continue;
        }
        let Some(connz) = response.data else { continue };
        let server_id = response
            .server
            .map(|s| s.id)
            .unwrap_or(connz.server_id.clone());
        for c in connz.connections {
            if user.is_some_and(|u| u != c.authorized_user) {
                continue;
            }
            out.push(LiveConnection {
                server_id: server_id.clone(),
                cid: c.cid,
                user: c.authorized_user,
                account: c.account,
            });
        }
    }
    if !answered {
        return Err(RevokeError::NoAnswer(subject.to_string(), first_wait));
    }
    Ok(out)
}

/// Disconnects one connection.
pub async fn kick(system: &Client, connection: &LiveConnection) -> Result<(), RevokeError> {
    let subject = format!("$SYS.REQ.SERVER.{}.KICK", connection.server_id);
    let body = serde_json::json!({ "cid": connection.cid }).to_string();
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        system.request(subject.clone(), body.into()),
    )
    .await
    .map_err(|_| RevokeError::NoAnswer(subject.clone(), Duration::from_secs(5)))?
    .map_err(|e| RevokeError::Nats(e.to_string()))?;
    let response: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
    match response.get("error") {
        Some(error) if !error.is_null() => Err(RevokeError::Nats(format!(
            "kick of connection {} refused: {error}",
            connection.cid
        ))),
        _ => Ok(()),
    }
}

/// Disconnects every live connection of `public_key` in `account`; returns them.
pub async fn disconnect_key(
    system: &Client,
    account: &str,
    public_key: &str,
) -> Result<Vec<LiveConnection>, RevokeError> {
    let connections = list_connections(
        system,
        account,
        Some(public_key),
        Duration::from_secs(2),
        Duration::from_millis(200),
    )
    .await?;
    let mut kicked = Vec::new();
    for connection in connections {
        match kick(system, &connection).await {
            Ok(()) => kicked.push(connection),
            Err(e) => tracing::warn!(key = public_key, "{e}"),
        }
    }
    Ok(kicked)
}
