//! The live policy set: reloaded when the files change, keeping the last
//! good set when the new one does not validate.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::broadcast;

use super::set::{PolicyError, PolicySet, WithdrawnKey, MAX_POLICY_FILE_BYTES};

/// A new policy set was installed.
#[derive(Debug, Clone)]
pub struct PolicyChange {
    /// The set now in force.
    pub set: Arc<PolicySet>,
    /// Keys whose live connections must be closed.
    pub withdrawn: Vec<WithdrawnKey>,
}

struct Inner {
    dir: Option<PathBuf>,
    current: RwLock<Arc<PolicySet>>,
    /// Fingerprint of the files last looked at (good or bad), so that a bad
    /// edit is reported once, not every poll.
    seen: Mutex<Option<u64>>,
    changes: broadcast::Sender<Arc<PolicyChange>>,
}

/// The policy set in force, shared by the auth callout and the request service.
#[derive(Clone)]
pub struct PolicyStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl PolicyStore {
    /// Loads `dir`; fails if it does not validate.
    pub fn load(dir: &Path) -> Result<PolicyStore, PolicyError> {
        let fingerprint = fingerprint(dir).ok();
        let set = PolicySet::load_dir(dir)?;
        for warning in set.warnings() {
            tracing::warn!("{warning}");
        }
        let store = Self::build(Some(dir.to_path_buf()), set);
        *store.inner.seen.lock().unwrap_or_else(|e| e.into_inner()) = fingerprint;
        Ok(store)
    }

    /// A store holding a fixed set that is never reloaded (tests, embedded demos).
    pub fn fixed(set: PolicySet) -> PolicyStore {
        Self::build(None, set)
    }

    fn build(dir: Option<PathBuf>, set: PolicySet) -> PolicyStore {
        let (changes, _) = broadcast::channel(64);
        PolicyStore {
            inner: Arc::new(Inner {
                dir,
                current: RwLock::new(Arc::new(set)),
                seen: Mutex::new(None),
                changes,
            }),
        }
    }

    /// The directory the store reloads from, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    /// The set in force now (cheap: a shared pointer).
    pub fn current(&self) -> Arc<PolicySet> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Receives every installed change (withdrawn keys included).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PolicyChange>> {
        self.inner.changes.subscribe()
    }

    /// Installs `set`, announcing the keys it withdraws.
    pub fn replace(&self, set: PolicySet) -> Arc<PolicyChange> {
        let set = Arc::new(set);
        let previous = {
            let mut current = self
                .inner
                .current
                .write()
                .unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *current, set.clone())
        };
        let withdrawn = previous.withdrawn_keys(&set, OffsetDateTime::now_utc());
        let change = Arc::new(PolicyChange { set, withdrawn });
        // No receiver is fine: nobody is listening yet.
        let _ = self.inner.changes.send(change.clone());
        change
    }

    /// Reloads the directory if its files changed since last looked at.
    ///
    /// `Ok(None)`: unchanged (or the same bad files as before). `Err`: the
    /// new files do not validate; the previous set stays in force.
    pub fn reload_if_changed(&self) -> Result<Option<Arc<PolicyChange>>, PolicyError> {
        let Some(dir) = self.inner.dir.clone() else {
            return Ok(None);
        };
        let now_print = fingerprint(&dir).ok();
        {
            let mut seen = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
            // Unchanged files, or a directory that still cannot be listed
            // (reported once).
            if *seen == now_print {
                return Ok(None);
            }
            *seen = now_print;
        }
        self.reload_from(&dir).map(Some)
    }

    /// Reloads the directory now, whether or not it changed.
    pub fn reload(&self) -> Result<Arc<PolicyChange>, PolicyError> {
        match self.inner.dir.clone() {
            Some(dir) => {
                *self.inner.seen.lock().unwrap_or_else(|e| e.into_inner()) = fingerprint(&dir).ok();
                self.reload_from(&dir)
            }
            None => Ok(self.replace((*self.current()).clone())),
        }
    }

    fn reload_from(&self, dir: &Path) -> Result<Arc<PolicyChange>, PolicyError> {
        let set = PolicySet::load_dir(dir)?;
        for warning in set.warnings() {
            tracing::warn!("{warning}");
        }
        Ok(self.replace(set))
    }

    /// Polls the directory every `interval` and reloads on change, logging
    /// invalid edits (the last good set stays in force). Stops when the
    /// returned handle is dropped or aborted.
    pub fn spawn_watcher(&self, interval: Duration) -> WatcherHandle {
        let store = self.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let probe = store.clone();
                let outcome = tokio::task::spawn_blocking(move || probe.reload_if_changed()).await;
                match outcome {
                    Ok(Ok(Some(change))) => {
                        tracing::info!(
                            withdrawn = change.withdrawn.len(),
                            institutions = change.set.institutions().count(),
                            "policies reloaded"
                        );
                        for w in &change.withdrawn {
                            tracing::info!(key = %w.public_key, principal = %w.principal, reason = %w.reason, "key withdrawn");
                        }
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        tracing::error!("policy reload refused, keeping the previous policies: {e}")
                    }
                    Err(e) => tracing::error!("policy reload task failed: {e}"),
                }
            }
        });
        WatcherHandle { task }
    }
}

/// The policy directory watcher; dropping it stops the watcher.
pub struct WatcherHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Hash of the names and contents of the policy files: contents rather than
/// mtimes, because an edit within the same second may keep the mtime.
fn fingerprint(dir: &Path) -> std::io::Result<u64> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
        .collect();
    entries.sort();
    let mut hasher = DefaultHasher::new();
    for path in entries {
        path.hash(&mut hasher);
        let meta = std::fs::metadata(&path)?;
        meta.len().hash(&mut hasher);
        if meta.len() <= MAX_POLICY_FILE_BYTES {
            std::fs::read(&path)?.hash(&mut hasher);
        }
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(key: &str, revoked: bool) -> String {
        format!(
            "id = \"ucsd\"\nname = \"UCSD\"\n[[keys]]\npublic = \"{key}\"\nrevoked = {revoked}\n\
             [[grants]]\nstream = \"LCLS_MFX\"\nsubjects = [\"lcls.mfx.e1.>\"]\n"
        )
    }

    #[test]
    fn reload_reports_revocation_and_keeps_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        let key = nkeys::KeyPair::new_user().public_key();
        let file = dir.path().join("ucsd.toml");
        std::fs::write(&file, policy(&key, false)).unwrap();
        let store = PolicyStore::load(dir.path()).unwrap();
        let mut changes = store.subscribe();
        assert!(store.reload_if_changed().unwrap().is_none());

        std::fs::write(&file, policy(&key, true)).unwrap();
        let change = store.reload_if_changed().unwrap().unwrap();
        assert_eq!(change.withdrawn.len(), 1);
        assert_eq!(change.withdrawn[0].public_key, key);
        assert_eq!(changes.try_recv().unwrap().withdrawn.len(), 1);

        // A broken edit is refused once, and the revoked set stays in force.
        std::fs::write(&file, "id = \"ucsd\"\nbogus = 1\n").unwrap();
        assert!(store.reload_if_changed().is_err());
        assert!(store.reload_if_changed().unwrap().is_none());
        let now = OffsetDateTime::now_utc();
        assert!(store
            .current()
            .authenticate(&key, now)
            .unwrap_err()
            .contains("revoked"));
    }
}
