//! Authentication at the broker: the gateway is nats-server's auth callout.
//!
//! Every client connects with an nkey. nats-server forwards the connection
//! (nkey, nonce, signature) to the callout on `$SYS.REQ.USER.AUTH`; the
//! callout checks the signature and the policies and answers with a user JWT
//! granting exactly what the key's principal may do, or with the reason for
//! refusal. When the policies withdraw a key, its live connections are
//! closed through the system account.
//!
//! - [`jwt`]: NATS JWT encoding, decoding and nonce signatures.
//! - [`claims`]: the callout's request, response and user claims.
//! - [`permissions`]: what institutions, agents and operators may do.
//! - [`server_config`]: the nats-server blocks the callout needs.
//! - [`request`]: reading and bounding the server's authorization requests.
//! - [`callout`]: the service itself.
//! - [`revoke`]: finding and disconnecting live connections.
//!
//! Putting it together (the gateway command and the demo do this):
//!
//! ```text
//! let keys = GatewayKeys::load_or_generate(&key_dir, true)?;           // or ::generate(true)
//! config.blocks.extend(callout_server_blocks(&CalloutServerSettings::from_keys(&keys)));
//! let store = PolicyStore::load(&policy_dir)?;
//! let _watcher = store.spawn_watcher(Duration::from_secs(1));
//! let callout = AuthCallout::connect(&url, &keys, store.clone(),
//!                                    CalloutSettings::default(), Arc::new(|d| audit(d))).await?;
//! // the request service connects as keys.service_user (account LCLS, bypasses the callout)
//! ...
//! callout.shutdown().await;
//! ```
//!
//! Partners connect with `ConnectOptions::with_nkey(seed)
//! .custom_inbox_prefix(inbox_prefix(id))` and read from the consumer slots
//! `consumer_slot_name(id, k)`; agents and operators with `with_nkey(seed)`.

pub mod callout;
pub mod claims;
pub mod jwt;
pub mod permissions;
pub mod request;
pub mod revoke;
pub mod server_config;

pub use crate::naming::{consumer_slot_name, inbox_prefix, request_permission, request_subject};
pub use callout::{
    AuthAction, AuthCallout, AuthDecision, AuthDecisionSink, CalloutKeys, CalloutSettings,
};
pub use permissions::{permissions_for, Permissions};
pub use request::{read_authorization_request, ReadRequest, RequestError, RequestErrorKind};
pub use server_config::{
    callout_server_blocks, CalloutServerSettings, CALLOUT_ACCOUNT, FACILITY_ACCOUNT, SYSTEM_ACCOUNT,
};
