//! The auth callout service: answers nats-server's authorization requests
//! from the policies, and disconnects keys the policies withdraw.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, HeaderMap, Message};
use futures::StreamExt;
use lclstream_nats::server_urls::server_urls;
use nkeys::{KeyPair, XKey};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::claims::{
    AuthorizationRequest, AuthorizationResponse, UserClaims, CALLOUT_SUBJECT, SERVER_XKEY_HEADER,
};
use super::jwt::{self, Claims, StandardClaims};
use super::permissions::permissions_for;
use super::request::{read_authorization_request, ReadRequest};
use super::revoke;
use super::server_config::{FACILITY_ACCOUNT, PARTNER_ACCOUNT};
use crate::keys::GatewayKeys;
use crate::policy::{Access, Identity, PolicyChange, PolicyStore, Principal};
use lclstream_nats::connection_events::log_events_with_url;
use lclstream_nats::protocol::naming::GATEWAY_INBOX_PREFIX;

/// Settings of the callout service.
#[derive(Debug, Clone)]
pub struct CalloutSettings {
    /// Account agents and operators land in (the user JWT's `aud`).
    pub account: String,
    /// Account institutions land in.
    pub partner_account: String,
    /// Lifetime of issued user JWTs: the server closes the connection when it
    /// ends and the client reconnects through the callout again. A fallback
    /// for revocation, which normally disconnects at once.
    pub user_ttl: Duration,
    /// Public keys of configured users (the gateway's own) that a sweep of
    /// live connections must never disconnect. [`AuthCallout::connect`] adds
    /// the gateway's three users.
    pub exempt_users: Vec<String>,
}

impl Default for CalloutSettings {
    fn default() -> Self {
        CalloutSettings {
            account: FACILITY_ACCOUNT.to_string(),
            partner_account: PARTNER_ACCOUNT.to_string(),
            user_ttl: Duration::from_secs(3600),
            exempt_users: Vec::new(),
        }
    }
}

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthAction {
    /// A connection attempt was allowed or refused.
    Connect,
    /// A live connection was closed after its key was withdrawn.
    Disconnect,
}

/// One authentication decision, for the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthDecision {
    /// When (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Connect or disconnect.
    pub action: AuthAction,
    /// The client's public nkey (empty if it presented none).
    pub public_key: String,
    /// Who the key belongs to, if known.
    pub principal: Option<Principal>,
    /// Whether the connection was allowed (always false for disconnects).
    pub allowed: bool,
    /// Why: `authorized`, or the reason given to the client.
    pub reason: String,
    /// Client address.
    pub client_host: String,
    /// Connection id on its server.
    pub client_id: u64,
    /// Client-chosen connection name.
    pub client_name: String,
    /// Server id.
    pub server_id: String,
    /// Expiry of the issued user JWT (unix seconds), when allowed.
    pub expires: Option<i64>,
}

impl AuthDecision {
    /// The decision as an audit line object: `ts`, `who` (the public key),
    /// `institution`, `action` (`connect`/`disconnect`), `decision`
    /// (`allow`/`deny`), `reason` (`authorized` or the refusal) and `details`.
    pub fn audit_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ts": self.time.format(&time::format_description::well_known::Rfc3339).ok(),
            "who": self.public_key,
            "institution": self.institution(),
            "action": match self.action {
                AuthAction::Connect => "connect",
                AuthAction::Disconnect => "disconnect",
            },
            "decision": if self.allowed { "allow" } else { "deny" },
            "reason": self.reason,
            "details": {
                "principal": self.principal,
                "client_host": self.client_host,
                "client_id": self.client_id,
                "client_name": self.client_name,
                "server_id": self.server_id,
                "expires": self.expires,
            },
        })
    }

    /// The institution id, when the principal is an institution.
    pub fn institution(&self) -> Option<&str> {
        self.principal
            .as_ref()
            .filter(|p| p.kind == crate::policy::PrincipalKind::Institution)
            .map(|p| p.id.as_str())
    }
}

/// Receives every decision (e.g. writes the audit log). Must not block long.
pub type AuthDecisionSink = Arc<dyn Fn(AuthDecision) + Send + Sync>;

/// The keys the callout signs and seals with.
pub struct CalloutKeys {
    /// Issuer account key (must match `auth_callout.issuer`).
    pub issuer: KeyPair,
    /// Curve key (must match `auth_callout.xkey`), if encrypted.
    pub xkey: Option<XKey>,
}

impl CalloutKeys {
    /// The callout keys of `keys` (copied through their seeds).
    pub fn from_gateway(keys: &GatewayKeys) -> Result<CalloutKeys, String> {
        let issuer = keys
            .issuer
            .seed()
            .and_then(|seed| KeyPair::from_seed(&seed))
            .map_err(|e| format!("the issuer key has no usable seed: {e}"))?;
        let xkey = match &keys.xkey {
            Some(x) => Some(
                x.seed()
                    .and_then(|seed| XKey::from_seed(&seed))
                    .map_err(|e| format!("the xkey has no usable seed: {e}"))?,
            ),
            None => None,
        };
        Ok(CalloutKeys { issuer, xkey })
    }
}

struct Service {
    keys: CalloutKeys,
    store: PolicyStore,
    settings: CalloutSettings,
    sink: AuthDecisionSink,
}

/// A running callout service; [`AuthCallout::shutdown`] stops it.
pub struct AuthCallout {
    tasks: Vec<JoinHandle<()>>,
    callout_client: Client,
}

impl AuthCallout {
    /// Connects the callout and system users of `keys` to `url` and starts the service.
    pub async fn connect(
        url: &str,
        keys: &GatewayKeys,
        store: PolicyStore,
        mut settings: CalloutSettings,
        sink: AuthDecisionSink,
    ) -> anyhow::Result<AuthCallout> {
        for user in [
            &keys.callout_user,
            &keys.service_user,
            &keys.front_user,
            &keys.system_user,
        ] {
            settings.exempt_users.push(user.public_key());
        }
        let callout = log_events_with_url(
            async_nats::ConnectOptions::with_nkey(GatewayKeys::seed_of(&keys.callout_user)),
            url,
            "lclstream-gateway-callout",
        )
        .name("lclstream-gateway-callout")
        .retry_on_initial_connect()
        .connect(server_urls(url))
        .await
        .map_err(|e| anyhow::anyhow!("callout connection to {url}: {e}"))?;
        let system = log_events_with_url(
            async_nats::ConnectOptions::with_nkey(GatewayKeys::seed_of(&keys.system_user)),
            url,
            "lclstream-gateway-system",
        )
        .name("lclstream-gateway-system")
        .custom_inbox_prefix(GATEWAY_INBOX_PREFIX)
        .retry_on_initial_connect()
        .connect(server_urls(url))
        .await
        .map_err(|e| anyhow::anyhow!("system connection to {url}: {e}"))?;
        Ok(Self::start(
            callout,
            Some(system),
            CalloutKeys::from_gateway(keys).map_err(anyhow::Error::msg)?,
            store,
            settings,
            sink,
        )
        .await?)
    }

    /// Starts answering on `$SYS.REQ.USER.AUTH` through `callout_client` (a
    /// user of the callout account). With `system_client` (a system-account
    /// user), keys withdrawn by a policy change are disconnected at once.
    pub async fn start(
        callout_client: Client,
        system_client: Option<Client>,
        keys: CalloutKeys,
        store: PolicyStore,
        settings: CalloutSettings,
        sink: AuthDecisionSink,
    ) -> Result<AuthCallout, async_nats::SubscribeError> {
        // A queue group: with several gateways, each request is answered once.
        let mut requests = callout_client
            .queue_subscribe(CALLOUT_SUBJECT, CALLOUT_QUEUE_GROUP.to_string())
            .await?;
        // Make sure the server has the subscription before anyone relies on it.
        let _ = callout_client.flush().await;
        let mut changes = store.subscribe();
        let service = Arc::new(Service {
            keys,
            store,
            settings,
            sink,
        });
        let mut tasks = Vec::new();
        let answering = service.clone();
        let client = callout_client.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                let started = std::time::Instant::now();
                answering.answer(&client, message).await;
                crate::metrics::global().observe_callout(started.elapsed());
            }
        }));
        if let Some(system) = system_client {
            let revoking = service.clone();
            tasks.push(tokio::spawn(async move {
                // Connections authorized before a restart of the gateway may
                // belong to keys withdrawn meanwhile.
                revoking.sweep(&system).await;
                loop {
                    match changes.recv().await {
                        Ok(change) => revoking.disconnect_withdrawn(&system, &change).await,
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(
                                missed,
                                "policy changes missed; checking every connection"
                            );
                            revoking.sweep(&system).await;
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
            }));
        }
        Ok(AuthCallout {
            tasks,
            callout_client,
        })
    }

    /// Stops answering and revoking.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = self.callout_client.flush().await;
    }
}

/// Queue group of the callout responders of all gateways of a facility.
pub const CALLOUT_QUEUE_GROUP: &str = "lclstream-gateway-auth";

impl Drop for AuthCallout {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The claims of the user JWT the callout issues to `identity` for the
/// connection the server named `user_nkey`, at `now_unix`: the account its
/// kind lands in, its permissions, and an expiry of `settings.user_ttl` or
/// the key's own expiry, whichever comes first.
pub fn user_claims(
    identity: &Identity,
    user_nkey: &str,
    settings: &CalloutSettings,
    now_unix: i64,
) -> Claims<UserClaims> {
    let mut expires = now_unix + settings.user_ttl.as_secs().max(1) as i64;
    if let Some(key_expires) = identity.key_expires {
        expires = expires.min(key_expires.unix_timestamp());
    }
    let account = match identity.access {
        Access::Institution { .. } => &settings.partner_account,
        Access::Agent { .. } | Access::Operator => &settings.account,
    };
    Claims {
        standard: StandardClaims {
            aud: account.clone(),
            exp: expires,
            // The connection's user name: lets revocation find it by key.
            name: identity.public_key.clone(),
            sub: user_nkey.to_string(),
            ..Default::default()
        },
        nats: UserClaims::new(permissions_for(identity)),
    }
}

/// The claims of the callout's answer to `request`.
pub fn response_claims(
    request: &AuthorizationRequest,
    response: AuthorizationResponse,
) -> Claims<AuthorizationResponse> {
    Claims {
        standard: StandardClaims {
            aud: request.server_id.id.clone(),
            sub: request.user_nkey.clone(),
            ..Default::default()
        },
        nats: response,
    }
}

impl Service {
    async fn answer(&self, client: &Client, message: Message) {
        let Some(reply) = message.reply.clone() else {
            tracing::warn!("authorization request without a reply subject");
            return;
        };
        let read = match self.read_request(&message) {
            Ok(read) => read,
            Err(reason) => {
                // Without a readable request there is no user key to answer
                // to: the server times the client out.
                tracing::warn!("unreadable authorization request: {reason}");
                self.emit(AuthDecision {
                    time: OffsetDateTime::now_utc(),
                    action: AuthAction::Connect,
                    public_key: String::new(),
                    principal: None,
                    allowed: false,
                    reason: format!("unreadable authorization request: {reason}"),
                    client_host: String::new(),
                    client_id: 0,
                    client_name: String::new(),
                    server_id: String::new(),
                    expires: None,
                });
                return;
            }
        };
        let request = &read.request;
        let now = OffsetDateTime::now_utc();
        let outcome = self.decide(request, now);
        let (response, decision) = match outcome {
            Ok((identity, user_jwt, expires)) => (
                AuthorizationResponse::allow(user_jwt),
                self.decision(
                    request,
                    Some(identity.principal),
                    true,
                    "authorized".into(),
                    Some(expires),
                ),
            ),
            Err((principal, reason)) => (
                AuthorizationResponse::refuse(reason.clone()),
                self.decision(request, principal, false, reason, None),
            ),
        };
        match self.encode_response(request, response, read.server_xkey.as_ref()) {
            Ok(payload) => {
                if let Err(e) = client.publish(reply, payload.into()).await {
                    tracing::warn!("cannot answer an authorization request: {e}");
                }
            }
            Err(e) => tracing::error!("cannot sign an authorization response: {e}"),
        }
        self.emit(decision);
    }

    fn emit(&self, decision: AuthDecision) {
        if decision.allowed {
            tracing::info!(key = %decision.public_key, principal = ?decision.principal, "connection authorized");
        } else {
            tracing::info!(key = %decision.public_key, action = ?decision.action, reason = %decision.reason, "connection refused or closed");
        }
        (self.sink)(decision);
    }

    fn decision(
        &self,
        request: &AuthorizationRequest,
        principal: Option<Principal>,
        allowed: bool,
        reason: String,
        expires: Option<i64>,
    ) -> AuthDecision {
        AuthDecision {
            time: OffsetDateTime::now_utc(),
            action: AuthAction::Connect,
            public_key: request.connect_opts.nkey.clone(),
            principal,
            allowed,
            reason,
            client_host: request.client_info.host.clone(),
            client_id: request.client_info.id,
            client_name: request.connect_opts.name.clone(),
            server_id: request.server_id.id.clone(),
            expires,
        }
    }

    /// Opens (if sealed) and verifies the server's request JWT.
    fn read_request(&self, message: &Message) -> Result<ReadRequest, String> {
        let server_xkey_header = message
            .headers
            .as_ref()
            .and_then(|h: &HeaderMap| h.get(SERVER_XKEY_HEADER))
            .map(|v| v.to_string());
        self.read_request_parts(&message.payload, server_xkey_header)
    }

    fn read_request_parts(
        &self,
        payload: &[u8],
        server_xkey_header: Option<String>,
    ) -> Result<ReadRequest, String> {
        read_authorization_request(
            payload,
            server_xkey_header.as_deref(),
            self.keys.xkey.as_ref(),
            jwt::unix_now(),
        )
        .map_err(|e| e.to_string())
    }

    /// Checks the client's key possession and policy; returns the identity,
    /// the signed user JWT and its expiry, or the principal (if known) and
    /// the reason for refusal.
    #[allow(clippy::type_complexity)]
    fn decide(
        &self,
        request: &AuthorizationRequest,
        now: OffsetDateTime,
    ) -> Result<(Identity, String, i64), (Option<Principal>, String)> {
        let nkey = &request.connect_opts.nkey;
        if nkey.is_empty() {
            return Err((
                None,
                "no nkey presented: connect with the nkey seed issued by the facility".into(),
            ));
        }
        let set = self.store.current();
        let principal = set.principal_of(nkey).cloned();
        if request.connect_opts.sig.is_empty() {
            return Err((principal, "no nonce signature presented".into()));
        }
        jwt::verify_nonce_signature(nkey, &request.client_info.nonce, &request.connect_opts.sig)
            .map_err(|e| (principal.clone(), e))?;
        let identity = set.authenticate(nkey, now).map_err(|e| (principal, e))?;
        let mut claims = user_claims(
            &identity,
            &request.user_nkey,
            &self.settings,
            now.unix_timestamp(),
        );
        let expires = claims.standard.exp;
        let token = jwt::encode(&mut claims, &self.keys.issuer).map_err(|e| {
            (
                Some(identity.principal.clone()),
                format!("internal error: {e}"),
            )
        })?;
        Ok((identity, token, expires))
    }

    fn encode_response(
        &self,
        request: &AuthorizationRequest,
        response: AuthorizationResponse,
        server_xkey: Option<&XKey>,
    ) -> Result<Vec<u8>, String> {
        let mut claims = response_claims(request, response);
        let token = jwt::encode(&mut claims, &self.keys.issuer).map_err(|e| e.to_string())?;
        match (server_xkey, &self.keys.xkey) {
            (Some(theirs), Some(ours)) => ours
                .seal(token.as_bytes(), theirs)
                .map_err(|e| format!("cannot seal the response: {e}")),
            _ => Ok(token.into_bytes()),
        }
    }

    async fn disconnect_withdrawn(&self, system: &Client, change: &PolicyChange) {
        for withdrawn in &change.withdrawn {
            self.disconnect(
                system,
                &withdrawn.public_key,
                Some(withdrawn.principal.clone()),
                &withdrawn.reason,
            )
            .await;
        }
    }

    async fn disconnect(
        &self,
        system: &Client,
        key: &str,
        principal: Option<Principal>,
        reason: &str,
    ) {
        for account in self.accounts() {
            self.disconnect_in(system, account, key, principal.clone(), reason)
                .await;
        }
    }

    /// The accounts callout users land in.
    fn accounts(&self) -> Vec<&str> {
        let mut accounts = vec![self.settings.account.as_str()];
        if self.settings.partner_account != self.settings.account {
            accounts.push(self.settings.partner_account.as_str());
        }
        accounts
    }

    async fn disconnect_in(
        &self,
        system: &Client,
        account: &str,
        key: &str,
        principal: Option<Principal>,
        reason: &str,
    ) {
        match revoke::disconnect_key(system, account, key).await {
            Ok(kicked) => {
                for connection in kicked {
                    self.emit(AuthDecision {
                        time: OffsetDateTime::now_utc(),
                        action: AuthAction::Disconnect,
                        public_key: key.to_string(),
                        principal: principal.clone(),
                        allowed: false,
                        reason: reason.to_string(),
                        client_host: String::new(),
                        client_id: connection.cid,
                        client_name: String::new(),
                        server_id: connection.server_id,
                        expires: None,
                    });
                }
            }
            Err(e) => tracing::error!(key, "cannot disconnect a withdrawn key: {e}"),
        }
    }

    /// Disconnects every live connection whose key no longer authenticates.
    async fn sweep(&self, system: &Client) {
        let mut connections = Vec::new();
        for account in self.accounts() {
            match revoke::list_connections(
                system,
                account,
                None,
                Duration::from_secs(2),
                Duration::from_millis(200),
            )
            .await
            {
                Ok(c) => connections.extend(c),
                Err(e) => {
                    tracing::error!("cannot list connections of account {account}: {e}");
                    return;
                }
            }
        }
        let set = self.store.current();
        let now = OffsetDateTime::now_utc();
        for connection in connections {
            // Only callout users carry a public user key as their name.
            if !connection.user.starts_with('U')
                || connection.user.len() != 56
                || self.settings.exempt_users.contains(&connection.user)
            {
                continue;
            }
            if let Err(reason) = set.authenticate(&connection.user, now) {
                let principal = set.principal_of(&connection.user).cloned();
                self.disconnect(system, &connection.user.clone(), principal, &reason)
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::{ClientInformation, ConnectOptions, ServerId, REQUEST_AUDIENCE};
    use crate::auth::permissions::institution_permissions;
    use crate::policy::PolicySet;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use nkeys::KeyPairType;

    struct Fixture {
        service: Service,
        server: KeyPair,
        institution: KeyPair,
        decisions: Arc<std::sync::Mutex<Vec<AuthDecision>>>,
    }

    fn fixture(xkey: Option<XKey>) -> Fixture {
        let institution = KeyPair::new_user();
        let policy: crate::policy::InstitutionPolicy = toml::from_str(&format!(
            "id = \"ucsd\"\nname = \"UCSD\"\nkeys = [{{ public = \"{}\" }}]\n\
             [[grants]]\nstream = \"LCLS_MFX\"\nsubjects = [\"lcls.mfx.e1.>\"]\n\
             [quotas]\nconcurrent_consumers = 2\n",
            institution.public_key()
        ))
        .unwrap();
        let set = PolicySet::from_parts(vec![("ucsd.toml".into(), policy)], None).unwrap();
        let decisions = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink_decisions = decisions.clone();
        Fixture {
            service: Service {
                keys: CalloutKeys {
                    issuer: KeyPair::new_account(),
                    xkey,
                },
                store: PolicyStore::fixed(set),
                settings: CalloutSettings::default(),
                sink: Arc::new(move |d| sink_decisions.lock().unwrap().push(d)),
            },
            server: KeyPair::new_server(),
            institution,
            decisions,
        }
    }

    /// A request as nats-server builds it, signed by `signer`.
    fn request(f: &Fixture, signer: &KeyPair, nonce: &str, sig: String) -> (String, String) {
        let user_nkey = KeyPair::new_user().public_key();
        let mut claims = Claims {
            standard: StandardClaims {
                aud: REQUEST_AUDIENCE.into(),
                exp: jwt::unix_now() + 2,
                sub: f.service.keys.issuer.public_key(),
                ..Default::default()
            },
            nats: AuthorizationRequest {
                server_id: ServerId {
                    id: signer.public_key(),
                    name: "n1".into(),
                    ..Default::default()
                },
                user_nkey: user_nkey.clone(),
                client_info: ClientInformation {
                    id: 7,
                    nonce: nonce.into(),
                    ..Default::default()
                },
                connect_opts: ConnectOptions {
                    nkey: f.institution.public_key(),
                    sig,
                    ..Default::default()
                },
                claim_type: "authorization_request".into(),
                version: 2,
            },
        };
        (jwt::encode(&mut claims, signer).unwrap(), user_nkey)
    }

    fn signed_nonce(key: &KeyPair, nonce: &str) -> String {
        URL_SAFE_NO_PAD.encode(key.sign(nonce.as_bytes()).unwrap())
    }

    #[test]
    fn issues_a_user_jwt_with_the_institution_permissions() {
        let f = fixture(None);
        let nonce = "abcdefghijklmno";
        let (token, user_nkey) = request(&f, &f.server, nonce, signed_nonce(&f.institution, nonce));
        let read = f
            .service
            .read_request_parts(token.as_bytes(), None)
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let (identity, user_jwt, expires) = f.service.decide(&read.request, now).unwrap();
        assert_eq!(identity.principal.id, "ucsd");
        let user: Claims<UserClaims> =
            jwt::decode(&user_jwt, KeyPairType::Account, jwt::unix_now()).unwrap();
        assert_eq!(user.standard.iss, f.service.keys.issuer.public_key());
        assert_eq!(user.standard.aud, "PARTNERS");
        assert_eq!(user.standard.sub, user_nkey);
        assert_eq!(user.standard.name, f.institution.public_key());
        assert_eq!(user.standard.exp, expires);
        assert!(expires <= now.unix_timestamp() + 3600);
        assert_eq!(
            user.nats.permissions,
            institution_permissions("ucsd", 2, &["LCLS_MFX".to_string()])
        );
        assert_eq!(user.nats.claim_type, "user");

        let response = f
            .service
            .encode_response(&read.request, AuthorizationResponse::allow(user_jwt), None)
            .unwrap();
        let response: Claims<AuthorizationResponse> = jwt::decode(
            std::str::from_utf8(&response).unwrap(),
            KeyPairType::Account,
            jwt::unix_now(),
        )
        .unwrap();
        assert_eq!(response.standard.aud, f.server.public_key());
        assert_eq!(response.standard.sub, user_nkey);
        assert_eq!(response.nats.claim_type, "authorization_response");
    }

    #[test]
    fn refuses_requests_not_signed_by_a_server_and_bad_nonce_signatures() {
        let f = fixture(None);
        let nonce = "abcdefghijklmno";
        let good_sig = signed_nonce(&f.institution, nonce);
        // Signed by an account key, not a server: refused before any decision.
        let (forged, _) = request(&f, &KeyPair::new_account(), nonce, good_sig.clone());
        let err = f
            .service
            .read_request_parts(forged.as_bytes(), None)
            .err()
            .unwrap();
        assert!(err.contains("not a Server key"), "{err}");

        // Signature by another key, over another nonce, or none at all.
        let now = OffsetDateTime::now_utc();
        let other = KeyPair::new_user();
        for (sig, nonce_used, expected) in [
            (signed_nonce(&other, nonce), nonce, "does not verify"),
            (
                signed_nonce(&f.institution, "another-nonce"),
                nonce,
                "does not verify",
            ),
            (String::new(), nonce, "no nonce signature"),
            (good_sig.clone(), "", "no nonce"),
        ] {
            let (token, _) = request(&f, &f.server, nonce_used, sig);
            let read = f
                .service
                .read_request_parts(token.as_bytes(), None)
                .unwrap();
            let (principal, reason) = f.service.decide(&read.request, now).err().unwrap();
            assert!(reason.contains(expected), "{reason}");
            assert_eq!(principal.unwrap().id, "ucsd");
        }
        assert!(f.decisions.lock().unwrap().is_empty());
    }

    #[test]
    fn opens_sealed_requests_and_seals_responses() {
        let f = fixture(Some(XKey::new()));
        let server_xkey = XKey::new();
        let ours =
            XKey::from_public_key(&f.service.keys.xkey.as_ref().unwrap().public_key()).unwrap();
        let nonce = "abcdefghijklmno";
        let (token, _) = request(&f, &f.server, nonce, signed_nonce(&f.institution, nonce));
        let sealed = server_xkey.seal(token.as_bytes(), &ours).unwrap();
        let read = f
            .service
            .read_request_parts(&sealed, Some(server_xkey.public_key()))
            .unwrap();
        assert!(read.server_xkey.is_some());
        // Unsealed bytes under the header are refused.
        assert!(f
            .service
            .read_request_parts(token.as_bytes(), Some(server_xkey.public_key()))
            .is_err());
        let response = f
            .service
            .encode_response(
                &read.request,
                AuthorizationResponse::refuse("no".into()),
                read.server_xkey.as_ref(),
            )
            .unwrap();
        assert!(!response.starts_with(b"eyJ"), "the response is sealed");
        let theirs_view =
            XKey::from_public_key(&f.service.keys.xkey.as_ref().unwrap().public_key()).unwrap();
        let opened = server_xkey.open(&response, &theirs_view).unwrap();
        let claims: Claims<AuthorizationResponse> = jwt::decode(
            std::str::from_utf8(&opened).unwrap(),
            KeyPairType::Account,
            jwt::unix_now(),
        )
        .unwrap();
        assert_eq!(claims.nats.error, "no");
    }
}
