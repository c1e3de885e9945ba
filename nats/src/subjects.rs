//! The subject scheme and stream naming.
//!
//! Event data: `lcls.<instrument>.<experiment>.<run>.<source>`, e.g.
//! `lcls.mfx.mfxp1234.42.jungfrau`.
//!
//! Why this order: permissions and consumer filters are wildcards on a
//! prefix, and access is granted per experiment (an institution is a member
//! of an experiment), so the experiment comes right after the instrument
//! (`lcls.mfx.mfxp1234.>` grants one experiment). The run comes next because
//! replays ask for runs; the source (detector group) is last because a
//! consumer usually wants every source of a run, or one source across runs
//! (`lcls.mfx.mfxp1234.*.jungfrau`). One stream per instrument
//! (`LCLS_MFX` on `lcls.mfx.>`) keeps the number of streams small while
//! letting retention differ by instrument.

use std::fmt;

/// Root token of every event-data subject.
pub const DATA_ROOT: &str = "lcls";

/// Subject prefix of the gateway's request service.
pub const GATEWAY_PREFIX: &str = "lclstream.gateway";

/// Checks that `token` can be one subject token: non-empty, only `[A-Za-z0-9_-]`.
pub fn validate_token(kind: &str, token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err(format!("{kind} must not be empty"));
    }
    if token.len() > 64 {
        return Err(format!("{kind} {token:?} is longer than 64 characters"));
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "{kind} {token:?} contains {c:?}; only letters, digits, '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// The address of one source's events in one run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataSubject {
    /// Instrument, e.g. `mfx` (lower case).
    pub instrument: String,
    /// Experiment, e.g. `mfxp1234`.
    pub experiment: String,
    /// Run number.
    pub run: u32,
    /// Source name, e.g. `jungfrau` or `smd`.
    pub source: String,
}

impl DataSubject {
    /// Builds and validates a subject.
    pub fn new(instrument: &str, experiment: &str, run: u32, source: &str) -> Result<Self, String> {
        validate_token("instrument", instrument)?;
        validate_token("experiment", experiment)?;
        validate_token("source", source)?;
        Ok(DataSubject {
            instrument: instrument.to_ascii_lowercase(),
            experiment: experiment.to_string(),
            run,
            source: source.to_string(),
        })
    }

    /// Parses `lcls.<instrument>.<experiment>.<run>.<source>`.
    pub fn parse(subject: &str) -> Result<Self, String> {
        let tokens: Vec<&str> = subject.split('.').collect();
        match tokens.as_slice() {
            [root, instrument, experiment, run, source] if *root == DATA_ROOT => {
                let run = run
                    .parse()
                    .map_err(|_| format!("run {run:?} in {subject:?} is not a number"))?;
                DataSubject::new(instrument, experiment, run, source)
            }
            _ => Err(format!(
                "{subject:?} is not of the form {DATA_ROOT}.<instrument>.<experiment>.<run>.<source>"
            )),
        }
    }

    /// The stream that holds this subject.
    pub fn stream(&self) -> String {
        stream_name(&self.instrument)
    }
}

impl fmt::Display for DataSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{DATA_ROOT}.{}.{}.{}.{}",
            self.instrument, self.experiment, self.run, self.source
        )
    }
}

/// Stream name of an instrument: `LCLS_<INSTRUMENT>`.
pub fn stream_name(instrument: &str) -> String {
    format!("LCLS_{}", instrument.to_ascii_uppercase().replace('-', "_"))
}

/// Subjects captured by an instrument's stream: `lcls.<instrument>.>`.
pub fn stream_subjects(instrument: &str) -> String {
    format!("{DATA_ROOT}.{}.>", instrument.to_ascii_lowercase())
}

/// Subject filter for every source of every run of an experiment.
pub fn experiment_filter(instrument: &str, experiment: &str) -> String {
    format!(
        "{DATA_ROOT}.{}.{experiment}.>",
        instrument.to_ascii_lowercase()
    )
}

/// Whether `subject` (which may hold wildcards) lies within `pattern`.
///
/// Both are NATS subjects; `*` matches one token, `>` the rest. A filter with
/// wildcards lies within a pattern only if every subject it can match does.
pub fn subject_within(subject: &str, pattern: &str) -> bool {
    let s: Vec<&str> = subject.split('.').collect();
    let p: Vec<&str> = pattern.split('.').collect();
    let mut i = 0;
    loop {
        match (p.get(i), s.get(i)) {
            (Some(&">"), Some(_)) => return true,
            (Some(&">"), None) => return false,
            (Some(_), Some(&">")) => return false,
            (Some(&"*"), Some(_)) => {}
            (Some(_), Some(&"*")) => return false,
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let s = DataSubject::new("MFX", "mfxp1234", 42, "jungfrau").unwrap();
        assert_eq!(s.to_string(), "lcls.mfx.mfxp1234.42.jungfrau");
        assert_eq!(DataSubject::parse(&s.to_string()).unwrap(), s);
        assert_eq!(s.stream(), "LCLS_MFX");
        assert!(DataSubject::parse("lcls.mfx.x.notanumber.y").is_err());
        assert!(DataSubject::parse("other.mfx.x.1.y").is_err());
    }

    #[test]
    fn refuses_wildcards_and_dots_in_tokens() {
        for bad in ["a.b", "*", ">", "", "a b"] {
            assert!(DataSubject::new("mfx", bad, 1, "s").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn containment() {
        assert!(subject_within("lcls.mfx.e1.3.det", "lcls.mfx.e1.>"));
        assert!(subject_within("lcls.mfx.e1.>", "lcls.mfx.e1.>"));
        assert!(subject_within("lcls.mfx.e1.*.det", "lcls.mfx.e1.>"));
        assert!(subject_within("lcls.mfx.e1.*.det", "lcls.mfx.*.*.det"));
        assert!(!subject_within("lcls.mfx.>", "lcls.mfx.e1.>"));
        assert!(!subject_within("lcls.mfx.*.3.det", "lcls.mfx.e1.>"));
        assert!(!subject_within("lcls.mfx.e1", "lcls.mfx.e1.>"));
        assert!(!subject_within("lcls.mfx.e2.1.d", "lcls.mfx.e1.>"));
    }
}
