//! The audit log: every authentication and request decision as one JSON line.
//!
//! A line is `{"ts", "who", "institution", "action", "decision", "reason",
//! "details"}`, appended to a file and/or written to stderr. Lines are written
//! synchronously and flushed one by one so that a crash loses at most the
//! line being written. The auth callout feeds its decisions in through
//! [`Audit::record`] (or [`Audit::record_json`] for an already-built object).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Allowed / granted.
    Allow,
    /// Refused.
    Deny,
    /// Not a decision but an event worth keeping (consumer paused, quota reset).
    Info,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the decision was made (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    /// Who asked: a user nkey, a user name, or `institution:<id>` when only the subject is known.
    pub who: String,
    /// The institution the decision concerns, when known.
    pub institution: Option<String>,
    /// What was asked: `connect`, `request`, `list`, `usage`, `release`, `pause`, `resume`...
    pub action: String,
    /// The outcome.
    pub decision: Decision,
    /// Machine-readable reason (`granted`, `no_grant`, `quota_bytes`...).
    pub reason: String,
    /// Anything else worth keeping (filters, consumer, error text).
    #[serde(default)]
    pub details: serde_json::Value,
}

impl AuditRecord {
    /// A record stamped with the current wall-clock time.
    pub fn now(
        who: impl Into<String>,
        institution: Option<&str>,
        action: impl Into<String>,
        decision: Decision,
        reason: impl Into<String>,
        details: serde_json::Value,
    ) -> AuditRecord {
        AuditRecord {
            ts: OffsetDateTime::now_utc(),
            who: who.into(),
            institution: institution.map(str::to_string),
            action: action.into(),
            decision,
            reason: reason.into(),
            details,
        }
    }
}

/// Where audit lines go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// File the lines are appended to (created if missing); none for no file.
    pub file: Option<PathBuf>,
    /// Also write every line to stderr.
    pub stderr: bool,
}

/// How many recent records are kept in memory for [`Audit::recent`].
const RECENT: usize = 1024;

/// The audit log writer; share it behind an `Arc`.
pub struct Audit {
    file: Option<Mutex<File>>,
    path: Option<PathBuf>,
    stderr: bool,
    recent: Mutex<VecDeque<AuditRecord>>,
}

impl Audit {
    /// Opens the log described by `config`.
    pub fn open(config: &AuditConfig) -> Result<Audit, std::io::Error> {
        let file = match &config.file {
            Some(path) => Some(Mutex::new(open_append(path)?)),
            None => None,
        };
        Ok(Audit {
            file,
            path: config.file.clone(),
            stderr: config.stderr,
            recent: Mutex::new(VecDeque::new()),
        })
    }

    /// A log that only keeps records in memory (for tests and embedding).
    pub fn in_memory() -> Audit {
        Audit {
            file: None,
            path: None,
            stderr: false,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// The file lines are appended to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends one record. Write errors are logged, never propagated: a
    /// full disk must not turn into refused or granted requests.
    pub fn record(&self, record: AuditRecord) {
        // Connect decisions carry the principal (`details.principal.kind`,
        // null for a key nobody knows); other records without an institution
        // are the facility's own (jobs, operators).
        let role = match record.details.get("principal") {
            Some(principal) => principal["kind"].as_str().unwrap_or("unknown"),
            None => "facility",
        };
        crate::metrics::global().record_decision(
            record.institution.as_deref(),
            Some(role),
            &record.action,
            record.decision,
        );
        match serde_json::to_string(&record) {
            Ok(line) => self.write_line(&line),
            Err(e) => tracing::error!("cannot serialize audit record: {e}"),
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// Appends a record given as JSON (for callers with their own record
    /// shape). A missing `ts` is filled in; the value must be an object.
    pub fn record_json(&self, mut value: serde_json::Value) {
        let Some(object) = value.as_object_mut() else {
            tracing::error!("audit record is not a JSON object: {value}");
            return;
        };
        if !object.contains_key("ts") {
            let ts = OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            object.insert("ts".into(), ts.into());
        }
        match serde_json::from_value::<AuditRecord>(value.clone()) {
            Ok(record) => self.record(record),
            // Keep lines of other shapes too: the log is for humans and tools.
            Err(_) => self.write_line(&value.to_string()),
        }
    }

    /// The most recent records (at most 1024), oldest first.
    pub fn recent(&self) -> Vec<AuditRecord> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().cloned().collect()
    }

    fn write_line(&self, line: &str) {
        if let Some(file) = &self.file {
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = writeln!(file, "{line}").and_then(|_| file.flush()) {
                tracing::error!("cannot write the audit log: {e}");
            }
        }
        if self.stderr {
            eprintln!("{line}");
        }
    }
}

fn open_append(path: &Path) -> Result<File, std::io::Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("audit log {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let audit = Audit::open(&AuditConfig {
            file: Some(path.clone()),
            stderr: false,
        })
        .unwrap();
        audit.record(AuditRecord::now(
            "institution:ucsd",
            Some("ucsd"),
            "request",
            Decision::Deny,
            "no_grant",
            serde_json::json!({"filters": ["lcls.cxi.>"]}),
        ));
        audit.record_json(serde_json::json!({
            "who": "UABC", "institution": "ucsd", "action": "connect",
            "decision": "allow", "reason": "key valid", "details": {}
        }));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["decision"], "deny");
        assert_eq!(lines[0]["reason"], "no_grant");
        assert_eq!(lines[1]["action"], "connect");
        assert!(lines[1]["ts"].as_str().unwrap().contains('T'));
        assert_eq!(audit.recent().len(), 2);
    }
}
