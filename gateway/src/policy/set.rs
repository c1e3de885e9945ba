//! A validated set of policies: every institution file plus the roles file
//! of one directory, indexed by public key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use lclstream_nats::subjects::{stream_name, stream_subjects, subject_within};
use serde::Serialize;
use time::OffsetDateTime;

use super::model::{InstitutionKey, InstitutionPolicy};
use super::roles::{AgentRole, OperatorRole, RolesFile};

/// Name of the roles file inside a policy directory; every other `*.toml` is an institution.
pub const ROLES_FILE: &str = "roles.toml";

/// Largest policy file read (bytes); larger files are refused rather than read.
pub const MAX_POLICY_FILE_BYTES: u64 = 1024 * 1024;

/// Largest `quotas.concurrent_consumers`: every slot is named in the
/// institution's connect-time permissions, so the list must stay short.
pub const MAX_CONSUMER_SLOTS: u32 = 64;

/// Largest identifier length: identifiers end up in consumer names and inbox prefixes.
pub const MAX_ID_LEN: usize = 32;

/// What kind of party a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A partner institution (`policies/<id>.toml`).
    Institution,
    /// A facility agent (`[[agent]]` in `roles.toml`).
    Agent,
    /// An operator (`[[operator]]` in `roles.toml`).
    Operator,
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrincipalKind::Institution => "institution",
            PrincipalKind::Agent => "agent",
            PrincipalKind::Operator => "operator",
        })
    }
}

/// The party a key belongs to: kind and identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Principal {
    /// Institution, agent or operator.
    pub kind: PrincipalKind,
    /// Its identifier, e.g. `ucsd`.
    pub id: String,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// What a connection of a principal may do; the callout turns it into permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A partner institution with this many consumer slots on these streams.
    Institution {
        /// `quotas.concurrent_consumers`.
        slots: u32,
        /// The streams its grants name (sorted, without duplicates); its
        /// publish jobs' data stream is added by the permissions.
        streams: Vec<String>,
    },
    /// A facility agent publishing these instruments (lower case).
    Agent {
        /// Instruments, e.g. `["mfx"]`.
        instruments: Vec<String>,
    },
    /// An operator: everything.
    Operator,
}

/// A key that may connect now, and what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Who the key belongs to.
    pub principal: Principal,
    /// The principal's human-readable name.
    pub name: String,
    /// The public key.
    pub public_key: String,
    /// When the key stops being accepted, if ever.
    pub key_expires: Option<OffsetDateTime>,
    /// What it may do.
    pub access: Access,
}

/// How serious a finding of validation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The directory is refused.
    Error,
    /// Suspicious but accepted.
    Warning,
}

/// One finding of validation, naming the file and the key within it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The policy file.
    pub file: PathBuf,
    /// The key within the file, e.g. `keys[1].public`; empty for the whole file.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.location.is_empty() {
            write!(f, "{severity}: {}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{severity}: {}: {}: {}",
                self.file.display(),
                self.location,
                self.message
            )
        }
    }
}

/// A policy directory that does not validate.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyError {
    /// The directory (or a description of the source).
    pub source_name: String,
    /// Every finding, errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
}

impl PolicyError {
    /// Only the errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.errors().count();
        write!(f, "{} has {errors} policy error(s)", self.source_name)?;
        for d in &self.diagnostics {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics while validating.
#[derive(Default)]
struct Findings(Vec<Diagnostic>);

impl Findings {
    fn error(&mut self, file: &Path, location: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, file, location.into(), message.into());
    }

    fn warning(&mut self, file: &Path, location: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, file, location.into(), message.into());
    }

    fn push(&mut self, severity: Severity, file: &Path, location: String, message: String) {
        self.0.push(Diagnostic {
            severity,
            file: file.to_path_buf(),
            location,
            message,
        });
    }

    fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }
}

/// Where one key is declared.
#[derive(Debug, Clone)]
struct KeyEntry {
    principal: Principal,
    key: InstitutionKey,
}

/// Every policy of a directory, validated and indexed by public key.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    institutions: BTreeMap<String, InstitutionPolicy>,
    agents: BTreeMap<String, AgentRole>,
    operators: BTreeMap<String, OperatorRole>,
    keys: HashMap<String, KeyEntry>,
    warnings: Vec<Diagnostic>,
}

impl PolicySet {
    /// An empty set: every key is refused.
    pub fn empty() -> PolicySet {
        PolicySet::default()
    }

    /// Loads and validates every `*.toml` in `dir` (`roles.toml` holds roles,
    /// every other file one institution). Hidden files and other extensions are ignored.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
        let mut findings = Findings::default();
        let source_name = dir.display().to_string();
        let files = match policy_files(dir) {
            Ok(files) => files,
            Err(e) => {
                findings.error(dir, "", format!("cannot list the directory: {e}"));
                return Err(PolicyError {
                    source_name,
                    diagnostics: findings.0,
                });
            }
        };
        let mut institutions = Vec::new();
        let mut roles = None;
        for path in files {
            let text = match read_bounded(&path) {
                Ok(text) => text,
                Err(message) => {
                    findings.error(&path, "", message);
                    continue;
                }
            };
            let is_roles = path.file_name().and_then(|n| n.to_str()) == Some(ROLES_FILE);
            if is_roles {
                match toml::from_str::<RolesFile>(&text) {
                    Ok(parsed) => roles = Some((path, parsed)),
                    Err(e) => findings.error(&path, "", toml_message(&e)),
                }
            } else {
                match toml::from_str::<InstitutionPolicy>(&text) {
                    Ok(parsed) => institutions.push((path, parsed)),
                    Err(e) => findings.error(&path, "", toml_message(&e)),
                }
            }
        }
        if institutions.is_empty() && roles.is_none() && !findings.has_errors() {
            findings.warning(dir, "", "no policy files: every key will be refused");
        }
        Self::validate(source_name, institutions, roles, findings)
    }

    /// Validates already parsed policies (each with the file it came from).
    pub fn from_parts(
        institutions: Vec<(PathBuf, InstitutionPolicy)>,
        roles: Option<(PathBuf, RolesFile)>,
    ) -> Result<PolicySet, PolicyError> {
        Self::validate(
            "policies".to_string(),
            institutions,
            roles,
            Findings::default(),
        )
    }

    fn validate(
        source_name: String,
        institutions: Vec<(PathBuf, InstitutionPolicy)>,
        roles: Option<(PathBuf, RolesFile)>,
        mut findings: Findings,
    ) -> Result<PolicySet, PolicyError> {
        let now = OffsetDateTime::now_utc();
        let mut set = PolicySet::default();
        // Where each id and key was first declared, to name both places of a duplicate.
        let mut id_files: HashMap<String, PathBuf> = HashMap::new();
        let mut key_files: HashMap<String, (PathBuf, Principal)> = HashMap::new();

        let mut claim_id = |findings: &mut Findings, file: &Path, location: &str, id: &str| {
            check_id(findings, file, location, id);
            if let Some(first) = id_files.get(id) {
                findings.error(
                    file,
                    location,
                    format!("id {id:?} is already used in {}", first.display()),
                );
                false
            } else {
                id_files.insert(id.to_string(), file.to_path_buf());
                true
            }
        };

        for (file, policy) in institutions {
            let fresh = claim_id(&mut findings, &file, "id", &policy.id);
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if !stem.is_empty() && stem != policy.id {
                findings.warning(
                    &file,
                    "id",
                    format!(
                        "id {:?} differs from the file name; name the file {}.toml",
                        policy.id, policy.id
                    ),
                );
            }
            if policy.name.trim().is_empty() {
                findings.warning(&file, "name", "name is empty");
            }
            let principal = Principal {
                kind: PrincipalKind::Institution,
                id: policy.id.clone(),
            };
            check_keys(
                &mut findings,
                &file,
                "keys",
                &policy.keys,
                &principal,
                &mut key_files,
                now,
            );
            check_grants(&mut findings, &file, &policy);
            check_quotas(&mut findings, &file, &policy);
            if fresh {
                for key in &policy.keys {
                    set.keys.insert(
                        key.public.clone(),
                        KeyEntry {
                            principal: principal.clone(),
                            key: key.clone(),
                        },
                    );
                }
                set.institutions.insert(policy.id.clone(), policy);
            }
        }

        if let Some((file, roles)) = roles {
            for (i, agent) in roles.agent.into_iter().enumerate() {
                let at = format!("agent[{i}]");
                let fresh = claim_id(&mut findings, &file, &format!("{at}.id"), &agent.id);
                if agent.instruments.is_empty() {
                    findings.error(&file, format!("{at}.instruments"), "no instruments listed");
                }
                for (j, instrument) in agent.instruments.iter().enumerate() {
                    if let Err(e) =
                        lclstream_nats::subjects::validate_token("instrument", instrument)
                    {
                        findings.error(&file, format!("{at}.instruments[{j}]"), e);
                    }
                }
                let principal = Principal {
                    kind: PrincipalKind::Agent,
                    id: agent.id.clone(),
                };
                check_keys(
                    &mut findings,
                    &file,
                    &format!("{at}.keys"),
                    &agent.keys,
                    &principal,
                    &mut key_files,
                    now,
                );
                if fresh {
                    for key in &agent.keys {
                        set.keys.insert(
                            key.public.clone(),
                            KeyEntry {
                                principal: principal.clone(),
                                key: key.clone(),
                            },
                        );
                    }
                    set.agents.insert(agent.id.clone(), agent);
                }
            }
            for (i, operator) in roles.operator.into_iter().enumerate() {
                let at = format!("operator[{i}]");
                let fresh = claim_id(&mut findings, &file, &format!("{at}.id"), &operator.id);
                let principal = Principal {
                    kind: PrincipalKind::Operator,
                    id: operator.id.clone(),
                };
                check_keys(
                    &mut findings,
                    &file,
                    &format!("{at}.keys"),
                    &operator.keys,
                    &principal,
                    &mut key_files,
                    now,
                );
                if fresh {
                    for key in &operator.keys {
                        set.keys.insert(
                            key.public.clone(),
                            KeyEntry {
                                principal: principal.clone(),
                                key: key.clone(),
                            },
                        );
                    }
                    set.operators.insert(operator.id.clone(), operator);
                }
            }
        }

        if findings.has_errors() {
            return Err(PolicyError {
                source_name,
                diagnostics: findings.0,
            });
        }
        set.warnings = findings.0;
        Ok(set)
    }

    /// Warnings found while validating (the set is usable).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The policy of an institution.
    pub fn institution(&self, id: &str) -> Option<&InstitutionPolicy> {
        self.institutions.get(id)
    }

    /// Every institution, by id.
    pub fn institutions(&self) -> impl Iterator<Item = &InstitutionPolicy> {
        self.institutions.values()
    }

    /// The institutions as a map by id (a copy, for callers keeping their own map).
    pub fn institution_map(&self) -> HashMap<String, InstitutionPolicy> {
        self.institutions
            .iter()
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect()
    }

    /// Every facility agent, by id.
    pub fn agents(&self) -> impl Iterator<Item = &AgentRole> {
        self.agents.values()
    }

    /// Every operator, by id.
    pub fn operators(&self) -> impl Iterator<Item = &OperatorRole> {
        self.operators.values()
    }

    /// Every declared public key (usable or not).
    pub fn public_keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Who declared a public key (whether or not it is usable now).
    pub fn principal_of(&self, public_key: &str) -> Option<&Principal> {
        self.keys.get(public_key).map(|e| &e.principal)
    }

    /// The institution a public key belongs to, if it belongs to one.
    pub fn institution_of_key(&self, public_key: &str) -> Option<&InstitutionPolicy> {
        let entry = self.keys.get(public_key)?;
        match entry.principal.kind {
            PrincipalKind::Institution => self.institutions.get(&entry.principal.id),
            _ => None,
        }
    }

    /// Whether `public_key` may connect at `now`, and as whom; the error is
    /// the reason given to the client.
    pub fn authenticate(&self, public_key: &str, now: OffsetDateTime) -> Result<Identity, String> {
        let Some(entry) = self.keys.get(public_key) else {
            return Err(format!("unknown key {public_key}"));
        };
        let principal = &entry.principal;
        if entry.key.revoked {
            return Err(format!("key {public_key} of {principal} is revoked"));
        }
        if let Some(expires) = entry.key.expires {
            if expires <= now {
                return Err(format!(
                    "key {public_key} of {principal} expired at {}",
                    format_time(expires)
                ));
            }
        }
        let (name, access) = match principal.kind {
            PrincipalKind::Institution => {
                let policy = &self.institutions[&principal.id];
                (
                    policy.name.clone(),
                    Access::Institution {
                        slots: policy.quotas.concurrent_consumers,
                        streams: {
                            let mut streams: Vec<String> =
                                policy.grants.iter().map(|g| g.stream.clone()).collect();
                            streams.sort();
                            streams.dedup();
                            streams
                        },
                    },
                )
            }
            PrincipalKind::Agent => {
                let agent = &self.agents[&principal.id];
                let instruments = agent
                    .instruments
                    .iter()
                    .map(|i| i.to_ascii_lowercase())
                    .collect();
                (agent.name.clone(), Access::Agent { instruments })
            }
            PrincipalKind::Operator => {
                (self.operators[&principal.id].name.clone(), Access::Operator)
            }
        };
        Ok(Identity {
            principal: principal.clone(),
            name,
            public_key: public_key.to_string(),
            key_expires: entry.key.expires,
            access,
        })
    }

    /// Keys usable in `self` whose connections must be closed under `next`:
    /// removed, revoked, expired, or moved to other access (a reconnect picks
    /// up the new permissions).
    pub fn withdrawn_keys(&self, next: &PolicySet, now: OffsetDateTime) -> Vec<WithdrawnKey> {
        let mut out = Vec::new();
        let mut keys: Vec<&String> = self.keys.keys().collect();
        keys.sort();
        for key in keys {
            let Ok(before) = self.authenticate(key, now) else {
                continue;
            };
            let reason = match next.authenticate(key, now) {
                Err(reason) => reason,
                Ok(after)
                    if after.principal != before.principal || after.access != before.access =>
                {
                    format!("permissions of {} changed", after.principal)
                }
                Ok(_) => continue,
            };
            out.push(WithdrawnKey {
                public_key: key.clone(),
                principal: before.principal,
                reason,
            });
        }
        out
    }
}

/// A key whose live connections must be closed after a policy change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WithdrawnKey {
    /// The public key.
    pub public_key: String,
    /// Who it belonged to before the change.
    pub principal: Principal,
    /// Why, e.g. `key U... of institution ucsd is revoked`.
    pub reason: String,
}

/// The instrument of a stream named `LCLS_<INSTRUMENT>`, lower case.
pub fn instrument_of_stream(stream: &str) -> Option<String> {
    let rest = stream.strip_prefix("LCLS_")?;
    if rest.is_empty()
        || !rest
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    let instrument = rest.to_ascii_lowercase();
    (stream_name(&instrument) == stream).then_some(instrument)
}

/// Checks that a public key is an nkey user key (`U...`).
pub fn check_user_public_key(key: &str) -> Result<(), String> {
    match nkeys::KeyPair::from_public_key(key) {
        Ok(kp) if kp.key_pair_type() == nkeys::KeyPairType::User => Ok(()),
        Ok(kp) => Err(format!(
            "{key:?} is a {:?} key, not a user key (U...)",
            kp.key_pair_type()
        )),
        Err(e) => Err(format!("{key:?} is not a valid public nkey: {e}")),
    }
}

fn format_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > MAX_POLICY_FILE_BYTES {
        return Err(format!(
            "file is {} bytes, more than the {MAX_POLICY_FILE_BYTES} allowed",
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))
}

fn toml_message(e: &toml::de::Error) -> String {
    // toml's message names the key and the line; keep it on one line per finding.
    e.to_string().trim_end().replace('\n', "\n    ")
}

fn check_id(findings: &mut Findings, file: &Path, location: &str, id: &str) {
    let valid_chars = id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if id.is_empty() || id.len() > MAX_ID_LEN || !valid_chars || id.starts_with('-') {
        findings.error(
            file,
            location,
            format!(
                "id {id:?} must be 1 to {MAX_ID_LEN} characters of a-z, 0-9 and '-', not starting with '-'"
            ),
        );
    }
}

fn check_keys(
    findings: &mut Findings,
    file: &Path,
    at: &str,
    keys: &[InstitutionKey],
    principal: &Principal,
    seen: &mut HashMap<String, (PathBuf, Principal)>,
    now: OffsetDateTime,
) {
    if keys.is_empty() {
        findings.warning(
            file,
            at,
            format!("{principal} has no keys and cannot connect"),
        );
    }
    for (i, key) in keys.iter().enumerate() {
        let location = format!("{at}[{i}].public");
        if let Err(e) = check_user_public_key(&key.public) {
            findings.error(file, &location, e);
            continue;
        }
        if let Some((first_file, first)) = seen.get(&key.public) {
            findings.error(
                file,
                &location,
                format!(
                    "key {} is already declared for {first} in {}",
                    key.public,
                    first_file.display()
                ),
            );
            continue;
        }
        seen.insert(key.public.clone(), (file.to_path_buf(), principal.clone()));
        if let Some(expires) = key.expires {
            if expires <= now && !key.revoked {
                findings.warning(
                    file,
                    format!("{at}[{i}].expires"),
                    format!("key expired at {}", format_time(expires)),
                );
            }
        }
    }
}

/// Checks a subject pattern's syntax: dot-separated tokens, `*` for one
/// token, `>` only last.
fn check_subject_syntax(subject: &str) -> Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            "*" => {}
            ">" if i + 1 == tokens.len() => {}
            ">" => return Err(format!("{subject:?}: '>' must be the last token")),
            other => lclstream_nats::subjects::validate_token("subject token", other)
                .map_err(|e| format!("{subject:?}: {e}"))?,
        }
    }
    Ok(())
}

/// Subject spaces a stream named after `instrument` may hold: `LCLS_<INSTRUMENT>`
/// holds `lcls.<instrument>.>`, and a partner site's mirror
/// `LCLS_<INSTRUMENT>_<SITE>` (multi-site topologies) holds the subjects of the
/// stream it mirrors, so every `_`-separated prefix is a candidate instrument.
fn stream_subject_spaces(instrument: &str) -> Vec<String> {
    let mut spaces = vec![stream_subjects(instrument)];
    for (i, c) in instrument.char_indices() {
        if c == '_' && i > 0 {
            spaces.push(stream_subjects(&instrument[..i]));
        }
    }
    spaces
}

fn check_grants(findings: &mut Findings, file: &Path, policy: &InstitutionPolicy) {
    if policy.grants.is_empty() {
        findings.error(
            file,
            "grants",
            "no grants: the institution could read nothing",
        );
    }
    for (i, grant) in policy.grants.iter().enumerate() {
        let at = format!("grants[{i}]");
        let instrument = instrument_of_stream(&grant.stream);
        if instrument.is_none() {
            findings.error(
                file,
                format!("{at}.stream"),
                format!(
                    "stream {:?} is not of the form LCLS_<INSTRUMENT>",
                    grant.stream
                ),
            );
        }
        if grant.subjects.is_empty() {
            findings.error(file, format!("{at}.subjects"), "no subjects listed");
        }
        for (j, subject) in grant.subjects.iter().enumerate() {
            let location = format!("{at}.subjects[{j}]");
            if let Err(e) = check_subject_syntax(subject) {
                findings.error(file, &location, e);
                continue;
            }
            if let Some(instrument) = &instrument {
                let spaces = stream_subject_spaces(instrument);
                if !spaces.iter().any(|space| subject_within(subject, space)) {
                    findings.error(
                        file,
                        &location,
                        format!(
                            "{subject:?} is not within the subjects of {} ({})",
                            grant.stream,
                            spaces.join(" or ")
                        ),
                    );
                }
            }
        }
        if let (Some(start), Some(end)) = (grant.not_before, grant.not_after) {
            if start >= end {
                findings.error(
                    file,
                    format!("{at}.not_after"),
                    format!(
                        "not_after ({}) must be later than not_before ({})",
                        format_time(end),
                        format_time(start)
                    ),
                );
            }
        }
    }
    // Overlaps are redundant rather than dangerous (access is the union of
    // grants), so they are warnings; they often reveal a typo.
    for (i, a) in policy.grants.iter().enumerate() {
        for (j, b) in policy.grants.iter().enumerate() {
            if i == j || a.stream != b.stream {
                continue;
            }
            for sa in &a.subjects {
                for sb in &b.subjects {
                    let contained = subject_within(sa, sb) && (sa != sb || i > j);
                    if contained {
                        findings.warning(
                            file,
                            format!("grants[{i}].subjects"),
                            format!("{sa:?} overlaps {sb:?} of grants[{j}]"),
                        );
                    }
                }
            }
        }
        for (k, sa) in a.subjects.iter().enumerate() {
            for (l, sb) in a.subjects.iter().enumerate() {
                if k != l && subject_within(sa, sb) && (sa != sb || k > l) {
                    findings.warning(
                        file,
                        format!("grants[{i}].subjects[{k}]"),
                        format!("{sa:?} is already covered by {sb:?}"),
                    );
                }
            }
        }
    }
}

fn check_quotas(findings: &mut Findings, file: &Path, policy: &InstitutionPolicy) {
    let q = &policy.quotas;
    if q.requests_per_hour == 0 {
        findings.error(
            file,
            "quotas.requests_per_hour",
            "must be at least 1 (revoke the keys to suspend an institution)",
        );
    }
    if q.concurrent_consumers == 0 || q.concurrent_consumers > MAX_CONSUMER_SLOTS {
        findings.error(
            file,
            "quotas.concurrent_consumers",
            format!("must be between 1 and {MAX_CONSUMER_SLOTS}"),
        );
    }
    if q.bytes_per_day == 0 {
        findings.error(file, "quotas.bytes_per_day", "must be at least 1");
    }
    let pull = &q.pull;
    for (name, value) in [
        ("max_batch", pull.max_batch),
        ("max_bytes", pull.max_bytes),
        ("max_ack_pending", pull.max_ack_pending),
    ] {
        if value <= 0 {
            findings.error(file, format!("quotas.pull.{name}"), "must be at least 1");
        }
    }
    if pull.ack_wait_secs == 0 {
        findings.error(file, "quotas.pull.ack_wait_secs", "must be at least 1");
    }
    if pull.inactive_threshold_secs == 0 {
        findings.error(
            file,
            "quotas.pull.inactive_threshold_secs",
            "must be at least 1",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_key() -> String {
        nkeys::KeyPair::new_user().public_key()
    }

    fn institution(id: &str, key: &str) -> String {
        format!(
            r#"
            id = "{id}"
            name = "Institution {id}"
            [[keys]]
            public = "{key}"
            [[grants]]
            stream = "LCLS_MFX"
            subjects = ["lcls.mfx.mfxp1234.>"]
            "#
        )
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn messages(err: &PolicyError) -> String {
        err.to_string()
    }

    #[test]
    fn loads_institutions_and_roles() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, k2, k3) = (user_key(), user_key(), user_key());
        write(dir.path(), "ucsd.toml", &institution("ucsd", &k1));
        write(
            dir.path(),
            "roles.toml",
            &format!(
                r#"
                [[agent]]
                id = "mfx-daq"
                instruments = ["mfx"]
                keys = [{{ public = "{k2}" }}]
                [[operator]]
                id = "ops"
                keys = [{{ public = "{k3}" }}]
                "#
            ),
        );
        write(dir.path(), "README.md", "not a policy");
        let set = PolicySet::load_dir(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let id = set.authenticate(&k1, now).unwrap();
        assert_eq!(id.principal.id, "ucsd");
        assert!(matches!(id.access, Access::Institution { slots: 4, .. }));
        assert_eq!(
            set.authenticate(&k2, now).unwrap().access,
            Access::Agent {
                instruments: vec!["mfx".into()]
            }
        );
        assert_eq!(set.authenticate(&k3, now).unwrap().access, Access::Operator);
        assert!(set
            .authenticate(&user_key(), now)
            .unwrap_err()
            .contains("unknown key"));
        assert_eq!(set.institution_of_key(&k1).unwrap().id, "ucsd");
    }

    #[test]
    fn refuses_unknown_fields_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = institution("ucsd", &user_key()) + "\n[quotas]\nrequests_per_hr = 3\n";
        write(dir.path(), "ucsd.toml", &text);
        let err = PolicySet::load_dir(dir.path()).unwrap_err();
        let text = messages(&err);
        assert!(text.contains("ucsd.toml"), "{text}");
        assert!(text.contains("requests_per_hr"), "{text}");
    }

    #[test]
    fn refuses_bad_and_duplicate_keys() {
        let dir = tempfile::tempdir().unwrap();
        let shared = user_key();
        write(dir.path(), "ucsd.toml", &institution("ucsd", &shared));
        write(dir.path(), "desy.toml", &institution("desy", &shared));
        let account = nkeys::KeyPair::new_account().public_key();
        write(dir.path(), "slac.toml", &institution("slac", &account));
        write(dir.path(), "bad.toml", &institution("bad", "UNOTAKEY"));
        let err = PolicySet::load_dir(dir.path()).unwrap_err();
        let text = messages(&err);
        assert!(
            text.contains("already declared for institution desy"),
            "{text}"
        );
        assert!(text.contains("slac.toml: keys[0].public"), "{text}");
        assert!(text.contains("not a user key"), "{text}");
        assert!(text.contains("bad.toml: keys[0].public"), "{text}");
    }

    #[test]
    fn refuses_duplicate_ids_and_bad_ids() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", &institution("ucsd", &user_key()));
        write(dir.path(), "b.toml", &institution("ucsd", &user_key()));
        write(dir.path(), "c.toml", &institution("Bad.Id", &user_key()));
        let text = messages(&PolicySet::load_dir(dir.path()).unwrap_err());
        assert!(
            text.contains("b.toml: id: id \"ucsd\" is already used"),
            "{text}"
        );
        assert!(text.contains("c.toml: id: id \"Bad.Id\" must be"), "{text}");
    }

    #[test]
    fn refuses_bad_grants_and_quotas() {
        let key = user_key();
        let text = format!(
            r#"
            id = "ucsd"
            name = "UCSD"
            keys = [{{ public = "{key}" }}]
            [[grants]]
            stream = "LCLS_MFX"
            subjects = ["lcls.cxi.cxip1.>", "lcls.mfx.>.x"]
            [[grants]]
            stream = "mfx"
            subjects = []
            [[grants]]
            stream = "LCLS_CXI"
            subjects = ["lcls.cxi.e1.>"]
            not_before = "2027-01-01T00:00:00Z"
            not_after = "2026-01-01T00:00:00Z"
            [quotas]
            requests_per_hour = 0
            concurrent_consumers = 0
            [quotas.pull]
            max_batch = 0
            "#
        );
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ucsd.toml", &text);
        let text = messages(&PolicySet::load_dir(dir.path()).unwrap_err());
        for expected in [
            "grants[0].subjects[0]: \"lcls.cxi.cxip1.>\" is not within the subjects of LCLS_MFX",
            "grants[0].subjects[1]",
            "grants[1].stream",
            "grants[1].subjects: no subjects listed",
            "grants[2].not_after",
            "quotas.requests_per_hour",
            "quotas.concurrent_consumers",
            "quotas.pull.max_batch",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn empty_grants_are_an_error_and_overlaps_a_warning() {
        let key = user_key();
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "ucsd.toml",
            &format!("id = \"ucsd\"\nname = \"U\"\nkeys = [{{ public = \"{key}\" }}]\n"),
        );
        let text = messages(&PolicySet::load_dir(dir.path()).unwrap_err());
        assert!(text.contains("ucsd.toml: grants: no grants"), "{text}");

        let overlapping = institution("ucsd", &key)
            + "[[grants]]\nstream = \"LCLS_MFX\"\nsubjects = [\"lcls.mfx.mfxp1234.3.*\"]\n";
        write(dir.path(), "ucsd.toml", &overlapping);
        let set = PolicySet::load_dir(dir.path()).unwrap();
        assert!(set
            .warnings()
            .iter()
            .any(|w| w.location == "grants[1].subjects" && w.message.contains("overlaps")));
    }

    #[test]
    fn withdrawn_keys_reports_revoked_removed_and_changed() {
        let (k1, k2, k3) = (user_key(), user_key(), user_key());
        let policy = |keys: &[(&str, bool)], slots: u32| {
            let mut p: InstitutionPolicy = toml::from_str(&institution("ucsd", &k1)).unwrap();
            p.keys = keys
                .iter()
                .map(|(k, revoked)| InstitutionKey {
                    public: k.to_string(),
                    comment: String::new(),
                    revoked: *revoked,
                    expires: None,
                })
                .collect();
            p.quotas.concurrent_consumers = slots;
            p
        };
        let before = PolicySet::from_parts(
            vec![(
                "ucsd.toml".into(),
                policy(&[(&k1, false), (&k2, false), (&k3, false)], 4),
            )],
            None,
        )
        .unwrap();
        let after = PolicySet::from_parts(
            vec![("ucsd.toml".into(), policy(&[(&k1, true), (&k3, false)], 4))],
            None,
        )
        .unwrap();
        let now = OffsetDateTime::now_utc();
        let withdrawn = before.withdrawn_keys(&after, now);
        let keys: Vec<&str> = withdrawn.iter().map(|w| w.public_key.as_str()).collect();
        let mut expected = vec![k1.as_str(), k2.as_str()];
        expected.sort();
        assert_eq!(keys, expected);
        assert!(withdrawn.iter().any(|w| w.reason.contains("revoked")));
        assert!(withdrawn.iter().any(|w| w.reason.contains("unknown key")));

        let fewer_slots = PolicySet::from_parts(
            vec![("ucsd.toml".into(), policy(&[(&k1, true), (&k3, false)], 2))],
            None,
        )
        .unwrap();
        let changed = after.withdrawn_keys(&fewer_slots, now);
        assert_eq!(changed.len(), 1);
        assert!(changed[0].reason.contains("permissions"));
    }

    #[test]
    fn stream_instruments() {
        assert_eq!(instrument_of_stream("LCLS_MFX").as_deref(), Some("mfx"));
        assert_eq!(
            stream_subject_spaces("mfx_partner_a"),
            vec!["lcls.mfx_partner_a.>", "lcls.mfx.>", "lcls.mfx_partner.>"]
        );
        assert_eq!(instrument_of_stream("LCLS_").as_deref(), None);
        assert_eq!(instrument_of_stream("LCLS_mfx").as_deref(), None);
        assert_eq!(instrument_of_stream("OTHER").as_deref(), None);
    }
}
