//! nats-server configuration for the auth callout: accounts, the gateway's
//! own users and the `auth_callout` block.

use lclstream_nats::server::quote;

use crate::keys::GatewayKeys;

/// Account where streams live and every authorized connection lands.
pub const FACILITY_ACCOUNT: &str = "LCLS";

/// Account of the callout responder, isolated so that no facility user can
/// see or answer authorization requests.
pub const CALLOUT_ACCOUNT: &str = "AUTH";

/// The system account (server events, connection listing, kicks).
pub const SYSTEM_ACCOUNT: &str = "SYS";

/// The public keys the server configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutServerSettings {
    /// Account key that signs user JWTs (`A...`).
    pub issuer: String,
    /// Curve key sealing the callout traffic (`X...`), if encrypted.
    pub xkey: Option<String>,
    /// User answering authorization requests, in [`CALLOUT_ACCOUNT`].
    pub callout_user: String,
    /// The gateway's request-service user, in [`FACILITY_ACCOUNT`].
    pub service_user: String,
    /// The gateway's system user, in [`SYSTEM_ACCOUNT`].
    pub system_user: String,
}

impl CalloutServerSettings {
    /// The settings for `keys`.
    pub fn from_keys(keys: &GatewayKeys) -> CalloutServerSettings {
        CalloutServerSettings {
            issuer: keys.issuer.public_key(),
            xkey: keys.xkey.as_ref().map(|x| x.public_key()),
            callout_user: keys.callout_user.public_key(),
            service_user: keys.service_user.public_key(),
            system_user: keys.system_user.public_key(),
        }
    }
}

/// Renders the `accounts`, `system_account` and `authorization` blocks for
/// [`lclstream_nats::server::ServerConfig::blocks`].
///
/// The gateway's three users are nkey users listed in `auth_users`, so they
/// bypass the callout; every other connection goes through it and lands in
/// [`FACILITY_ACCOUNT`]. Configured nkey users also make the server send a
/// nonce to every client, which the callout needs to check key possession.
pub fn callout_server_blocks(settings: &CalloutServerSettings) -> Vec<String> {
    let accounts = format!(
        "accounts {{\n  {CALLOUT_ACCOUNT} {{\n    users: [ {{ nkey: {} }} ]\n  }}\n  \
         {FACILITY_ACCOUNT} {{\n    jetstream: enabled\n    users: [ {{ nkey: {} }} ]\n  }}\n  \
         {SYSTEM_ACCOUNT} {{\n    users: [ {{ nkey: {} }} ]\n  }}\n}}\n",
        quote(&settings.callout_user),
        quote(&settings.service_user),
        quote(&settings.system_user),
    );
    let system = format!("system_account: {SYSTEM_ACCOUNT}\n");
    let xkey = settings
        .xkey
        .as_ref()
        .map(|x| format!("    xkey: {}\n", quote(x)))
        .unwrap_or_default();
    let authorization = format!(
        "authorization {{\n  auth_callout {{\n    issuer: {}\n    account: {CALLOUT_ACCOUNT}\n    \
         auth_users: [ {}, {}, {} ]\n{xkey}  }}\n}}\n",
        quote(&settings.issuer),
        quote(&settings.callout_user),
        quote(&settings.service_user),
        quote(&settings.system_user),
    );
    vec![accounts, system, authorization]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_accounts_and_callout() {
        let keys = GatewayKeys::generate(true);
        let settings = CalloutServerSettings::from_keys(&keys);
        let text = callout_server_blocks(&settings).concat();
        assert!(text.contains("jetstream: enabled"));
        assert!(text.contains(&format!("issuer: \"{}\"", settings.issuer)));
        assert!(text.contains(&format!("xkey: \"{}\"", settings.xkey.clone().unwrap())));
        assert!(text.contains("system_account: SYS"));
        assert_eq!(text.matches(&settings.service_user).count(), 2);
    }
}
