//! Checks on dataset requests that need no server: syntax, ranges, grants.

use lclstream_nats::subjects::subject_within;
use time::OffsetDateTime;

pub use super::protocol::check_label;
use super::protocol::{
    DatasetRequest, End, ErrorBody, ErrorCode, Start, MAX_FILTERS, MAX_FILTER_LEN, MAX_SEQUENCE,
};
use crate::policy::{Grant, InstitutionPolicy};

fn bad(reason: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadRequest, reason)
}

/// Checks one subject filter: tokens of `[A-Za-z0-9_-]`, whole-token `*`, and `>` only last.
pub fn check_filter(filter: &str) -> Result<(), ErrorBody> {
    if filter.is_empty() {
        return Err(bad("filters: a filter is empty"));
    }
    if filter.len() > MAX_FILTER_LEN {
        return Err(bad(format!(
            "filters: a filter is {} characters long; the limit is {MAX_FILTER_LEN}",
            filter.len()
        )));
    }
    let tokens: Vec<&str> = filter.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        let ok = match *token {
            "*" => true,
            ">" => i == tokens.len() - 1,
            t => {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }
        };
        if !ok {
            return Err(bad(format!(
                "filters: {filter:?} is not a valid subject filter (token {token:?}; tokens are \
                 letters, digits, '_' and '-', or a whole '*', or a final '>')"
            )));
        }
    }
    Ok(())
}

/// Whether some subject matches both filters.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) => {
                if *x != "*" && *y != "*" && x != y {
                    return false;
                }
            }
            _ => return false,
        }
        i += 1;
    }
}

fn check_sequence(field: &str, sequence: u64) -> Result<(), ErrorBody> {
    if sequence == 0 || sequence > MAX_SEQUENCE {
        return Err(bad(format!(
            "{field}.sequence: {sequence} is outside 1..={MAX_SEQUENCE}"
        )));
    }
    Ok(())
}

fn check_time(field: &str, t: OffsetDateTime) -> Result<(), ErrorBody> {
    if t.unix_timestamp() < 0 {
        return Err(bad(format!("{field}.time: {t} is before 1970")));
    }
    Ok(())
}

/// Checks everything in a dataset request that does not depend on policy.
pub fn check_request(request: &DatasetRequest) -> Result<(), ErrorBody> {
    if request.filters.is_empty() {
        return Err(bad("filters: at least one subject filter is required"));
    }
    if request.filters.len() > MAX_FILTERS {
        return Err(bad(format!(
            "filters: {} filters given; the limit is {MAX_FILTERS}",
            request.filters.len()
        )));
    }
    for filter in &request.filters {
        check_filter(filter)?;
    }
    for (i, a) in request.filters.iter().enumerate() {
        for b in &request.filters[i + 1..] {
            if filters_overlap(a, b) {
                return Err(bad(format!(
                    "filters: {a:?} and {b:?} overlap; give filters that select disjoint subjects"
                )));
            }
        }
    }
    match &request.start {
        Start::Sequence(s) => check_sequence("start", *s)?,
        Start::Time(t) => check_time("start", *t)?,
        Start::All | Start::New => {}
    }
    match &request.end {
        Some(End::Sequence(e)) => {
            check_sequence("end", *e)?;
            if let Start::Sequence(s) = request.start {
                if *e < s {
                    return Err(bad(format!(
                        "end.sequence {e} is before start.sequence {s}"
                    )));
                }
            }
        }
        Some(End::Time(e)) => {
            check_time("end", *e)?;
            if let Start::Time(s) = request.start {
                if *e < s {
                    return Err(bad(format!("end.time {e} is before start.time {s}")));
                }
            }
        }
        None => {}
    }
    if let Some(label) = &request.label {
        check_label(label)?;
    }
    Ok(())
}

/// Whether a grant is valid at `now`.
pub fn grant_active(grant: &Grant, now: OffsetDateTime) -> bool {
    grant.not_before.is_none_or(|t| t <= now) && grant.not_after.is_none_or(|t| now < t)
}

/// The stream all `filters` read from, if each lies within an active grant of
/// the same stream; a filter outside every grant is `no_grant`.
pub fn resolve_stream(
    policy: &InstitutionPolicy,
    filters: &[String],
    now: OffsetDateTime,
) -> Result<String, ErrorBody> {
    let mut stream: Option<&str> = None;
    for filter in filters {
        let grant = policy
            .grants
            .iter()
            .filter(|g| grant_active(g, now))
            .find(|g| g.subjects.iter().any(|p| subject_within(filter, p)));
        let Some(grant) = grant else {
            let inactive = policy
                .grants
                .iter()
                .any(|g| g.subjects.iter().any(|p| subject_within(filter, p)));
            let why = if inactive {
                "lies only within grants that are not valid now"
            } else {
                "is not within any of your grants"
            };
            return Err(ErrorBody::new(
                ErrorCode::NoGrant,
                format!("filter {filter:?} {why}"),
            ));
        };
        match stream {
            None => stream = Some(&grant.stream),
            Some(s) if s == grant.stream => {}
            Some(s) => {
                return Err(bad(format!(
                    "filters: {filter:?} reads stream {} but an earlier filter reads {s}; \
                     one request reads one stream",
                    grant.stream
                )))
            }
        }
    }
    stream
        .map(str::to_string)
        .ok_or_else(|| bad("filters: at least one subject filter is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_syntax() {
        for good in ["lcls.mfx.e1.>", "lcls.mfx.e1.*.det", "lcls.mfx.e1.3.det"] {
            check_filter(good).unwrap();
        }
        for bad in [
            "",
            "lcls..x",
            "lcls.>.x",
            "lcls.m*",
            "lcls. x",
            "lcls.mfx.e1.>.",
            ">x",
        ] {
            assert!(check_filter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overlap() {
        assert!(filters_overlap("a.b.>", "a.b.c"));
        assert!(filters_overlap("a.*.c", "a.b.*"));
        assert!(!filters_overlap("a.b.c", "a.b.d"));
        assert!(!filters_overlap("a.b", "a.b.c"));
        assert!(filters_overlap("a.>", "a.b.c.d"));
    }

    #[test]
    fn grants_bound_filters() {
        let policy: InstitutionPolicy = toml::from_str(
            r#"
            id = "ucsd"
            name = "x"
            [[grants]]
            stream = "LCLS_MFX"
            subjects = ["lcls.mfx.e1.>"]
            [[grants]]
            stream = "LCLS_CXI"
            subjects = ["lcls.cxi.e2.>"]
            not_after = "2000-01-01T00:00:00Z"
            "#,
        )
        .unwrap();
        let now = OffsetDateTime::now_utc();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve_stream(&policy, &s(&["lcls.mfx.e1.>"]), now).unwrap(),
            "LCLS_MFX"
        );
        for escape in [
            "lcls.mfx.>",
            "lcls.mfx.*.3.det",
            "lcls.>",
            ">",
            "lcls.mfx.e2.1.d",
        ] {
            let e = resolve_stream(&policy, &s(&[escape]), now).unwrap_err();
            assert_eq!(e.code, ErrorCode::NoGrant, "{escape}");
        }
        let e = resolve_stream(&policy, &s(&["lcls.cxi.e2.1.d"]), now).unwrap_err();
        assert!(e.reason.contains("not valid now"));
    }
}
