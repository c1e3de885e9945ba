//! Key files: nkey seeds written private (mode 0600) next to their public keys.
//!
//! A key pair named `NAME` in `DIR` is `DIR/NAME.nk` (the seed, `S...`) and
//! `DIR/NAME.pub` (the public key). Seeds are never overwritten: losing an
//! issued key by accident is worse than an error.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nkeys::{KeyPair, KeyPairType, XKey};

/// What a key is for; decides its nkey type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A partner institution's user key (`U...`).
    Institution,
    /// A facility agent's user key (`U...`).
    Agent,
    /// An operator's user key (`U...`).
    Operator,
    /// One of the gateway's own connections (`U...`): callout, service, system.
    Service,
    /// The auth callout issuer: an account key (`A...`) that signs user JWTs.
    Issuer,
    /// The auth callout encryption key: a curve key (`X...`).
    Xkey,
}

impl KeyKind {
    /// Parses `institution`, `agent`, `operator`, `service`, `issuer` or `xkey`.
    pub fn parse(text: &str) -> Result<KeyKind, String> {
        Ok(match text {
            "institution" => KeyKind::Institution,
            "agent" => KeyKind::Agent,
            "operator" => KeyKind::Operator,
            "service" => KeyKind::Service,
            "issuer" => KeyKind::Issuer,
            "xkey" => KeyKind::Xkey,
            other => {
                return Err(format!(
                "unknown key kind {other:?}: use institution, agent, operator, service, issuer or xkey"
            ))
            }
        })
    }
}

/// Errors reading or writing key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The seed file exists already.
    #[error("{0} exists already; refusing to overwrite a key (remove it first if you mean it)")]
    Exists(PathBuf),
    /// An I/O error on a key file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not hold a valid seed of the expected type.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A key name that is not a plain file name.
    #[error("key name {0:?} must be a plain file name ([A-Za-z0-9_.-], not starting with '.')")]
    BadName(String),
}

/// Paths and public key of a written key pair.
#[derive(Debug, Clone)]
pub struct WrittenKey {
    /// The seed file (mode 0600).
    pub seed_path: PathBuf,
    /// The public key file.
    pub public_path: PathBuf,
    /// The public key.
    pub public_key: String,
}

/// The seed file of key `name` in `dir`.
pub fn seed_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.nk"))
}

/// The public key file of key `name` in `dir`.
pub fn public_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pub"))
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadName(name.to_string()))
    }
}

/// Generates a key of `kind` and writes it as `name` into `dir` (created if needed).
pub fn generate(dir: &Path, name: &str, kind: KeyKind) -> Result<WrittenKey, KeyError> {
    check_name(name)?;
    let (seed, public_key) = match kind {
        KeyKind::Xkey => {
            let key = XKey::new();
            (seed_of_xkey(&key)?, key.public_key())
        }
        _ => {
            let key = KeyPair::new(key_type(kind));
            let seed = key.seed().map_err(|e| KeyError::Invalid {
                path: seed_path(dir, name),
                message: e.to_string(),
            })?;
            (seed, key.public_key())
        }
    };
    write_key(dir, name, &seed, &public_key)
}

fn seed_of_xkey(key: &XKey) -> Result<String, KeyError> {
    key.seed().map_err(|e| KeyError::Invalid {
        path: PathBuf::new(),
        message: e.to_string(),
    })
}

fn key_type(kind: KeyKind) -> KeyPairType {
    match kind {
        KeyKind::Issuer => KeyPairType::Account,
        KeyKind::Xkey => KeyPairType::Curve,
        _ => KeyPairType::User,
    }
}

/// Writes a seed (mode 0600, never overwriting) and its public key.
pub fn write_key(
    dir: &Path,
    name: &str,
    seed: &str,
    public_key: &str,
) -> Result<WrittenKey, KeyError> {
    check_name(name)?;
    fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let seed_path = seed_path(dir, name);
    let public_path = public_path(dir, name);
    // create_new: refuse to overwrite, atomically; mode applies at creation.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&seed_path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(seed_path.clone())
            } else {
                KeyError::Io {
                    path: seed_path.clone(),
                    source,
                }
            }
        })?;
    file.write_all(format!("{seed}\n").as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|source| KeyError::Io {
            path: seed_path.clone(),
            source,
        })?;
    fs::write(&public_path, format!("{public_key}\n")).map_err(|source| KeyError::Io {
        path: public_path.clone(),
        source,
    })?;
    Ok(WrittenKey {
        seed_path,
        public_path,
        public_key: public_key.to_string(),
    })
}

fn read_seed_text(path: &Path) -> Result<String, KeyError> {
    let meta = fs::metadata(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.len() > 4096 {
        return Err(KeyError::Invalid {
            path: path.to_path_buf(),
            message: "too large for a seed file".into(),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "{} is readable by other users; `chmod 600` it",
            path.display()
        );
    }
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // Accept a bare seed or a file whose first `S...` line is the seed.
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with('S'))
        .map(str::to_string)
        .ok_or_else(|| KeyError::Invalid {
            path: path.to_path_buf(),
            message: "no seed (a line starting with 'S') found".into(),
        })
}

/// Reads an nkey seed file, checking the key type.
pub fn read_key_pair(path: &Path, expected: KeyPairType) -> Result<KeyPair, KeyError> {
    let seed = read_seed_text(path)?;
    let key = KeyPair::from_seed(&seed).map_err(|e| KeyError::Invalid {
        path: path.to_path_buf(),
        message: format!("not a valid nkey seed: {e}"),
    })?;
    if key.key_pair_type() != expected {
        return Err(KeyError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "holds a {:?} key, expected a {expected:?} key",
                key.key_pair_type()
            ),
        });
    }
    Ok(key)
}

/// Reads a curve (xkey) seed file.
pub fn read_xkey(path: &Path) -> Result<XKey, KeyError> {
    let seed = read_seed_text(path)?;
    XKey::from_seed(&seed).map_err(|e| KeyError::Invalid {
        path: path.to_path_buf(),
        message: format!("not a valid curve (xkey) seed: {e}"),
    })
}

/// Reads the seed text of a file (for `ConnectOptions::with_nkey`), checking it is a user seed.
pub fn read_user_seed(path: &Path) -> Result<String, KeyError> {
    read_key_pair(path, KeyPairType::User)?;
    read_seed_text(path)
}

/// Reads key `name` from `dir`, generating it first if absent.
pub fn load_or_generate(dir: &Path, name: &str, kind: KeyKind) -> Result<String, KeyError> {
    let path = seed_path(dir, name);
    if !path.exists() {
        generate(dir, name, kind)?;
    }
    match kind {
        KeyKind::Xkey => read_xkey(&path).and_then(|k| seed_of_xkey(&k)),
        _ => read_key_pair(&path, key_type(kind)).and_then(|k| {
            k.seed().map_err(|e| KeyError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })
        }),
    }
}

/// The gateway's own keys: the callout issuer and encryption key, and the
/// user keys of its four connections and the notice-signing key.
pub struct GatewayKeys {
    /// Account key that signs user JWTs and authorization responses (`A...`).
    pub issuer: KeyPair,
    /// Curve key sealing callout traffic, if encryption is on (`X...`).
    pub xkey: Option<XKey>,
    /// User that answers auth callout requests (account `AUTH`).
    pub callout_user: KeyPair,
    /// User of the gateway's facility-side connection (account `LCLS`):
    /// consumers, job stores, metering.
    pub service_user: KeyPair,
    /// User of the gateway's partner-side connection (account `PARTNERS`):
    /// requests, replies, notices.
    pub front_user: KeyPair,
    /// Key that signs notices and forwarded job status, so that a partner
    /// can tell them from anything else arriving on its notice subjects.
    pub notice_key: KeyPair,
    /// User in the system account, to find and disconnect revoked connections.
    pub system_user: KeyPair,
}

impl GatewayKeys {
    /// Fresh keys in memory (tests, demos).
    pub fn generate(encrypt: bool) -> GatewayKeys {
        GatewayKeys {
            issuer: KeyPair::new_account(),
            xkey: encrypt.then(XKey::new),
            callout_user: KeyPair::new_user(),
            service_user: KeyPair::new_user(),
            front_user: KeyPair::new_user(),
            notice_key: KeyPair::new_user(),
            system_user: KeyPair::new_user(),
        }
    }

    /// Reads the keys from `dir`, generating missing ones: `issuer.nk`,
    /// `xkey.nk` (if `encrypt`), `callout.nk`, `service.nk`, `front.nk`,
    /// `notices.nk`, `system.nk`.
    pub fn load_or_generate(dir: &Path, encrypt: bool) -> Result<GatewayKeys, KeyError> {
        let user = |name: &str| -> Result<KeyPair, KeyError> {
            load_or_generate(dir, name, KeyKind::Service)?;
            read_key_pair(&seed_path(dir, name), KeyPairType::User)
        };
        load_or_generate(dir, "issuer", KeyKind::Issuer)?;
        let issuer = read_key_pair(&seed_path(dir, "issuer"), KeyPairType::Account)?;
        let xkey = if encrypt {
            load_or_generate(dir, "xkey", KeyKind::Xkey)?;
            Some(read_xkey(&seed_path(dir, "xkey"))?)
        } else {
            None
        };
        Ok(GatewayKeys {
            issuer,
            xkey,
            callout_user: user("callout")?,
            service_user: user("service")?,
            front_user: user("front")?,
            notice_key: user("notices")?,
            system_user: user("system")?,
        })
    }

    /// The seed of a user key, for `ConnectOptions::with_nkey`.
    pub fn seed_of(key: &KeyPair) -> String {
        key.seed().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_private_seed_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(dir.path(), "ucsd", KeyKind::Institution).unwrap();
        assert!(written.public_key.starts_with('U'));
        let mode = fs::metadata(&written.seed_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let public = fs::read_to_string(&written.public_path).unwrap();
        assert_eq!(public.trim(), written.public_key);
        let key = read_key_pair(&written.seed_path, KeyPairType::User).unwrap();
        assert_eq!(key.public_key(), written.public_key);
        assert!(matches!(
            generate(dir.path(), "ucsd", KeyKind::Agent),
            Err(KeyError::Exists(_))
        ));
        assert!(read_key_pair(&written.seed_path, KeyPairType::Account).is_err());
        assert!(matches!(
            generate(dir.path(), "../x", KeyKind::Agent),
            Err(KeyError::BadName(_))
        ));
    }

    #[test]
    fn gateway_keys_persist() {
        let dir = tempfile::tempdir().unwrap();
        let a = GatewayKeys::load_or_generate(dir.path(), true).unwrap();
        let b = GatewayKeys::load_or_generate(dir.path(), true).unwrap();
        assert_eq!(a.issuer.public_key(), b.issuer.public_key());
        assert!(a.issuer.public_key().starts_with('A'));
        assert!(a.xkey.unwrap().public_key().starts_with('X'));
        assert_eq!(a.system_user.public_key(), b.system_user.public_key());
    }
}
