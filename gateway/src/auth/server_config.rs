//! nats-server configuration for the auth callout: accounts, the gateway's
//! own users and the `auth_callout` block.

use lclstream_nats::protocol::naming::{partner_api_prefix, FACILITY_API_PREFIX};
use lclstream_nats::server::quote;

use super::permissions::{
    callout_user_permissions, gateway_front_permissions, gateway_service_permissions,
    system_user_permissions, Permissions, SubjectPermission,
};
use crate::keys::GatewayKeys;

/// Account where streams live and agents, operators and the gateway's
/// facility-side connection land.
pub const FACILITY_ACCOUNT: &str = "LCLS";

/// Account where every institution's connection lands. It holds no stream:
/// it imports from [`FACILITY_ACCOUNT`] only pull requests, consumer info
/// and acks, renamed under the JetStream domain `lclstream`
/// ([`PARTNER_JS_DOMAIN`]). A reply subject set by an institution is
/// therefore always a subject of this account, and no request of theirs can
/// make the server or the gateway publish into a stream, a key-value bucket
/// or the facility's JetStream API.
pub const PARTNER_ACCOUNT: &str = "PARTNERS";

/// Account of the callout responder, isolated so that no facility user can
/// see or answer authorization requests.
pub const CALLOUT_ACCOUNT: &str = "AUTH";

/// The system account (server events, connection listing, kicks).
pub const SYSTEM_ACCOUNT: &str = "SYS";

/// How long the server keeps the mapping of a partner's pull request to its
/// reply subject across the accounts; longer than any pull's expiry.
const RESPONSE_THRESHOLD: &str = "5m";

/// The public keys the server configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutServerSettings {
    /// Account key that signs user JWTs (`A...`).
    pub issuer: String,
    /// Curve key sealing the callout traffic (`X...`), if encrypted.
    pub xkey: Option<String>,
    /// User answering authorization requests, in [`CALLOUT_ACCOUNT`].
    pub callout_user: String,
    /// The gateway's facility-side user, in [`FACILITY_ACCOUNT`].
    pub service_user: String,
    /// The gateway's partner-side user (requests, replies, notices), in [`PARTNER_ACCOUNT`].
    pub front_user: String,
    /// The gateway's system user, in [`SYSTEM_ACCOUNT`].
    pub system_user: String,
    /// Facility administrators' user keys: unrestricted users of
    /// [`FACILITY_ACCOUNT`] that bypass the callout, for setting up streams
    /// and mirrors while no gateway runs. Keep their seeds offline; day-to-day
    /// operators are policy principals authorized by the callout.
    pub admin_users: Vec<String>,
}

impl CalloutServerSettings {
    /// The settings for `keys`.
    pub fn from_keys(keys: &GatewayKeys) -> CalloutServerSettings {
        CalloutServerSettings {
            issuer: keys.issuer.public_key(),
            xkey: keys.xkey.as_ref().map(|x| x.public_key()),
            callout_user: keys.callout_user.public_key(),
            service_user: keys.service_user.public_key(),
            front_user: keys.front_user.public_key(),
            system_user: keys.system_user.public_key(),
            admin_users: Vec::new(),
        }
    }
}

/// Renders permissions as a nats-server `permissions` block.
pub fn render_permissions(permissions: &Permissions) -> String {
    fn list(subjects: &[String]) -> String {
        let quoted: Vec<String> = subjects.iter().map(|s| quote(s)).collect();
        format!("[ {} ]", quoted.join(", "))
    }
    fn side(name: &str, p: &SubjectPermission) -> String {
        let mut parts = Vec::new();
        // An empty allow list would mean "everything"; deny all instead.
        if p.allow.is_empty() {
            parts.push(format!("deny: {}", list(&[">".to_string()])));
        } else {
            parts.push(format!("allow: {}", list(&p.allow)));
            if !p.deny.is_empty() {
                parts.push(format!("deny: {}", list(&p.deny)));
            }
        }
        format!("{name}: {{ {} }}", parts.join(", "))
    }
    let mut parts = vec![
        side("publish", &permissions.publish),
        side("subscribe", &permissions.subscribe),
    ];
    if let Some(responses) = &permissions.responses {
        parts.push(format!("allow_responses: {{ max: {} }}", responses.max));
    }
    format!("{{ {} }}", parts.join(", "))
}

/// The services the facility account offers the partner account: pulls
/// (several responses per request), consumer info and both ack forms.
/// Exact token counts, as in the permissions.
const PARTNER_SERVICES: [(&str, bool); 4] = [
    ("CONSUMER.MSG.NEXT.*.*", true),
    ("CONSUMER.INFO.*.*", false),
    ("$JS.ACK.*.*.*.*.*.*.*", false),
    ("$JS.ACK.*.*.*.*.*.*.*.*.*.>", false),
];

fn exported_subject(service: &str) -> String {
    if service.starts_with('$') {
        service.to_string()
    } else {
        format!("{FACILITY_API_PREFIX}.{service}")
    }
}

fn imported_subject(service: &str) -> String {
    if service.starts_with('$') {
        service.to_string()
    } else {
        format!("{}.{service}", partner_api_prefix())
    }
}

/// Renders the `accounts`, `system_account` and `authorization` blocks for
/// [`lclstream_nats::server::ServerConfig::blocks`].
///
/// The gateway's four users are nkey users listed in `auth_users`, so they
/// bypass the callout, each with an explicit allow list; every other
/// connection goes through the callout and lands in [`FACILITY_ACCOUNT`]
/// (agents, operators) or [`PARTNER_ACCOUNT`] (institutions). Configured
/// nkey users also make the server send a nonce to every client, which the
/// callout needs to check key possession.
pub fn callout_server_blocks(settings: &CalloutServerSettings) -> Vec<String> {
    let exports: Vec<String> = PARTNER_SERVICES
        .iter()
        .map(|(service, stream)| {
            format!(
                "      {{ service: {}, accounts: [ {PARTNER_ACCOUNT} ], response_threshold: {}{} }}",
                quote(&exported_subject(service)),
                quote(RESPONSE_THRESHOLD),
                if *stream {
                    ", response_type: stream"
                } else {
                    ""
                }
            )
        })
        .collect();
    let imports: Vec<String> = PARTNER_SERVICES
        .iter()
        .map(|(service, _)| {
            format!(
                "      {{ service: {{ account: {FACILITY_ACCOUNT}, subject: {} }}, to: {} }}",
                quote(&exported_subject(service)),
                quote(&imported_subject(service)),
            )
        })
        .collect();
    let user = |key: &str, permissions: Permissions| {
        format!(
            "{{ nkey: {}, permissions: {} }}",
            quote(key),
            render_permissions(&permissions)
        )
    };
    let accounts = format!(
        "accounts {{\n  {CALLOUT_ACCOUNT} {{\n    users: [ {} ]\n  }}\n  \
         {FACILITY_ACCOUNT} {{\n    jetstream: enabled\n    users: [ {} ]\n    \
         exports: [\n{}\n    ]\n  }}\n  \
         {PARTNER_ACCOUNT} {{\n    users: [ {} ]\n    imports: [\n{}\n    ]\n  }}\n  \
         {SYSTEM_ACCOUNT} {{\n    users: [ {} ]\n  }}\n}}\n",
        user(&settings.callout_user, callout_user_permissions()),
        std::iter::once(user(&settings.service_user, gateway_service_permissions()))
            .chain(
                settings
                    .admin_users
                    .iter()
                    .map(|key| format!("{{ nkey: {} }}", quote(key))),
            )
            .collect::<Vec<_>>()
            .join(", "),
        exports.join(",\n"),
        user(&settings.front_user, gateway_front_permissions()),
        imports.join(",\n"),
        user(&settings.system_user, system_user_permissions()),
    );
    let system = format!("system_account: {SYSTEM_ACCOUNT}\n");
    let xkey = settings
        .xkey
        .as_ref()
        .map(|x| format!("    xkey: {}\n", quote(x)))
        .unwrap_or_default();
    let auth_users: Vec<String> = [
        &settings.callout_user,
        &settings.service_user,
        &settings.front_user,
        &settings.system_user,
    ]
    .into_iter()
    .chain(&settings.admin_users)
    .map(|key| quote(key))
    .collect();
    let authorization = format!(
        "authorization {{\n  auth_callout {{\n    issuer: {}\n    account: {CALLOUT_ACCOUNT}\n    \
         auth_users: [ {} ]\n{xkey}  }}\n}}\n",
        quote(&settings.issuer),
        auth_users.join(", "),
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
        for user in [
            &settings.callout_user,
            &settings.service_user,
            &settings.front_user,
            &settings.system_user,
        ] {
            assert_eq!(text.matches(user.as_str()).count(), 2);
        }
        assert!(text.contains("PARTNERS {"));
        assert!(text.contains("to: \"$JS.lclstream.API.CONSUMER.MSG.NEXT.*.*\""));
        assert!(text.contains("allow_responses: { max: 1 }"));
    }
}
