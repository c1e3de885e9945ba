//! The NATS-specific claims of the auth callout exchange (nats-io/jwt v2):
//! the server's authorization request, our authorization response, and the
//! user JWT it carries.

use serde::{Deserialize, Serialize};

use super::permissions::Permissions;

/// Audience of every authorization request the server sends.
pub const REQUEST_AUDIENCE: &str = "nats-authorization-request";

/// Subject on which nats-server publishes authorization requests.
pub const CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

/// Header naming the server's curve key when the request is sealed.
pub const SERVER_XKEY_HEADER: &str = "Nats-Server-Xkey";

/// The server that forwards a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerId {
    /// Server name.
    #[serde(default)]
    pub name: String,
    /// Server host.
    #[serde(default)]
    pub host: String,
    /// Server id (public server nkey, `N...`); the response audience.
    #[serde(default)]
    pub id: String,
    /// Server version.
    #[serde(default)]
    pub version: String,
    /// Cluster name.
    #[serde(default)]
    pub cluster: String,
    /// The server's curve key, when the callout is encrypted.
    #[serde(default)]
    pub xkey: String,
}

/// The connecting client, as the server sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInformation {
    /// Remote address.
    #[serde(default)]
    pub host: String,
    /// Connection id on that server.
    #[serde(default)]
    pub id: u64,
    /// User (or nkey) the client presented.
    #[serde(default)]
    pub user: String,
    /// Client-chosen connection name.
    #[serde(default)]
    pub name: String,
    /// Connection kind (`Client`, `Leafnode`...).
    #[serde(default)]
    pub kind: String,
    /// Client type (`nats`, `mqtt`, `websocket`...).
    #[serde(default, rename = "type")]
    pub client_type: String,
    /// The nonce the client had to sign (present when it sent a signature).
    #[serde(default)]
    pub nonce: String,
}

/// The client's CONNECT options relevant to authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectOptions {
    /// Public user nkey.
    #[serde(default)]
    pub nkey: String,
    /// Signature of the nonce by that nkey (base64url).
    #[serde(default)]
    pub sig: String,
    /// A user JWT, if the client sent one (not used by lclstream).
    #[serde(default)]
    pub jwt: String,
    /// User name, if any.
    #[serde(default)]
    pub user: String,
    /// Client name.
    #[serde(default)]
    pub name: String,
    /// Client library language.
    #[serde(default)]
    pub lang: String,
    /// Client library version.
    #[serde(default)]
    pub version: String,
}

/// The `nats` object of an authorization request JWT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// The forwarding server.
    #[serde(default)]
    pub server_id: ServerId,
    /// The user key the server generated for this connection: the subject
    /// of both the response and the user JWT.
    pub user_nkey: String,
    /// The client.
    #[serde(default)]
    pub client_info: ClientInformation,
    /// The client's CONNECT options.
    #[serde(default)]
    pub connect_opts: ConnectOptions,
    /// Claim type (`authorization_request`).
    #[serde(default, rename = "type")]
    pub claim_type: String,
    /// Claims version.
    #[serde(default)]
    pub version: i64,
}

/// The `nats` object of an authorization response JWT: a user JWT or an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationResponse {
    /// The user JWT, when allowed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwt: String,
    /// Why not, when refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Claim type: `authorization_response`.
    #[serde(rename = "type")]
    pub claim_type: String,
    /// Claims version: 2.
    pub version: i64,
}

impl AuthorizationResponse {
    /// An allowing response carrying `jwt`.
    pub fn allow(jwt: String) -> Self {
        AuthorizationResponse {
            jwt,
            error: String::new(),
            claim_type: "authorization_response".into(),
            version: 2,
        }
    }

    /// A refusing response; the server shows `reason` to the client.
    pub fn refuse(reason: String) -> Self {
        AuthorizationResponse {
            jwt: String::new(),
            error: reason,
            claim_type: "authorization_response".into(),
            version: 2,
        }
    }
}

/// The `nats` object of a user JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    /// Publish/subscribe permissions.
    #[serde(flatten)]
    pub permissions: Permissions,
    /// Largest number of subscriptions (-1: no limit).
    pub subs: i64,
    /// Largest number of bytes (-1: no limit).
    pub data: i64,
    /// Largest payload (-1: no limit).
    pub payload: i64,
    /// Claim type: `user`.
    #[serde(rename = "type")]
    pub claim_type: String,
    /// Claims version: 2.
    pub version: i64,
}

impl UserClaims {
    /// User claims with `permissions` and no NATS-level limits.
    pub fn new(permissions: Permissions) -> Self {
        UserClaims {
            permissions,
            subs: -1,
            data: -1,
            payload: -1,
            claim_type: "user".into(),
            version: 2,
        }
    }
}
