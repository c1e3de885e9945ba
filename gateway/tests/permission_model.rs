//! The permission model check: for every role the gateway issues or runs
//! as, every subject its permissions allow must be, as nats-server reads
//! it, a resource that role owns; and the role's legitimate operations stay
//! allowed.
//!
//! Ownership is written here independently of the permission patterns, in
//! terms of how the server interprets a subject (which token of an ack
//! subject names the consumer, which verbs of the JetStream API exist), and
//! checked against subjects generated from every other party's names, both
//! ack forms at every length, every JetStream API verb, key-value, inbox,
//! job and system subjects, and pseudo-random token strings. Widening any
//! wildcard in `gateway/src/auth/permissions.rs` (say, ending an ack pattern
//! in `>` instead of exactly five `*`) makes this test fail.
//!
//! A published subject may itself contain `*` or `>` tokens; nats-server
//! routes them as ordinary tokens (they reach only subscriptions whose
//! pattern covers them), so ownership is judged on the tokens as written.

use lclstream_gateway::auth::permissions::{
    agent_permissions, callout_user_permissions, gateway_front_permissions,
    gateway_service_permissions, institution_permissions, system_user_permissions, Permissions,
};
use lclstream_nats::protocol::naming::parse_consumer_slot;

const INSTITUTIONS: [&str; 5] = ["ucsd", "desy", "a", "a-c1", "ucsd-c0"];
const STREAMS: [&str; 9] = [
    "LCLS_MFX",
    "LCLS_CXI",
    "LCLS_JOBS",
    "LCLS_JOBS_DATA",
    "KV_lclstream-jobs",
    "KV_lclstream-gateway-state",
    "KV_lclstream-gateway-live",
    "LCLS_MFX_UCSD",
    "OTHER",
];
const AGENT_KEY: &str = "UAGENTKEYAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const OTHER_KEY: &str = "UOTHERKEYAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Names any party could put into a token.
fn name_pool() -> Vec<String> {
    let mut names: Vec<String> = INSTITUTIONS.iter().map(|s| s.to_string()).collect();
    for id in INSTITUTIONS {
        for k in 0..4 {
            names.push(format!("{id}-c{k}"));
        }
        names.push(format!("{id}-c00"));
        names.push(format!("{id}-c"));
    }
    names.extend(STREAMS.iter().map(|s| s.to_string()));
    for extra in [
        "jobs-mfx",
        "jobs-cxi",
        "1",
        "0",
        "42",
        "_",
        "hub",
        "lclstream",
        "API",
        "ACK",
        "$JS",
        "notices",
        "gateway",
        "GATEWAY",
        AGENT_KEY,
        OTHER_KEY,
        "ZxN3p9Qk1LmTfHa2",
    ] {
        names.push(extra.to_string());
    }
    names
}

/// JetStream API verbs (nats-server `jetstream_api.go`), as token lists
/// without the stream and consumer names.
const VERBS: [&str; 26] = [
    "INFO",
    "STREAM.CREATE",
    "STREAM.UPDATE",
    "STREAM.DELETE",
    "STREAM.INFO",
    "STREAM.PURGE",
    "STREAM.LIST",
    "STREAM.NAMES",
    "STREAM.MSG.GET",
    "STREAM.MSG.DELETE",
    "STREAM.SNAPSHOT",
    "STREAM.RESTORE",
    "STREAM.LEADER.STEPDOWN",
    "STREAM.PEER.REMOVE",
    "DIRECT.GET",
    "CONSUMER.CREATE",
    "CONSUMER.DURABLE.CREATE",
    "CONSUMER.DELETE",
    "CONSUMER.INFO",
    "CONSUMER.LIST",
    "CONSUMER.NAMES",
    "CONSUMER.MSG.NEXT",
    "CONSUMER.PAUSE",
    "CONSUMER.UNPIN",
    "CONSUMER.LEADER.STEPDOWN",
    "ACCOUNT.PURGE",
];

/// Subjects to try: every shape the server acts on, filled with every name.
fn generated_subjects() -> Vec<String> {
    let names = name_pool();
    let mut out = Vec::new();
    // JetStream API, under the facility prefix, the partner import and a domain.
    for api in ["$JS.API", "$JS.lclstream.API", "$JS.hub.API"] {
        for verb in VERBS {
            out.push(format!("{api}.{verb}"));
            for stream in STREAMS {
                out.push(format!("{api}.{verb}.{stream}"));
                for name in &names {
                    out.push(format!("{api}.{verb}.{stream}.{name}"));
                    out.push(format!("{api}.{verb}.{stream}.{name}.lcls.mfx.e1"));
                }
            }
        }
    }
    // Ack subjects of every length from 7 to 13 tokens, each name at each
    // position, with another name at every other position.
    let fill = |len: usize, at: &[(usize, &str)]| -> String {
        let mut tokens: Vec<&str> = vec!["1"; len];
        tokens[0] = "$JS";
        tokens[1] = "ACK";
        for (i, v) in at {
            tokens[*i] = v;
        }
        tokens.join(".")
    };
    let ack_names = [
        "ucsd-c0",
        "ucsd-c1",
        "ucsd-c2",
        "ucsd-c00",
        "desy-c0",
        "a-c1",
        "a-c1-c0",
        "ucsd-c0-c0",
        "jobs-mfx",
        "LCLS_MFX",
        "LCLS_JOBS",
        "LCLS_JOBS_DATA",
    ];
    for len in 7..=13 {
        for i in 2..len {
            for a in &ack_names {
                out.push(fill(len, &[(i, a)]));
                for j in 2..len {
                    if j == i {
                        continue;
                    }
                    for b in [
                        "LCLS_MFX",
                        "LCLS_JOBS",
                        "LCLS_JOBS_DATA",
                        "desy-c0",
                        "ucsd-c0",
                    ] {
                        out.push(fill(len, &[(i, a), (j, b)]));
                    }
                }
            }
        }
    }
    // Gateway, inbox, data, job, key-value and system subjects.
    for name in &names {
        for verb in [
            "request",
            "list",
            "usage",
            "release",
            "jobs.submit",
            "jobs.get",
            "jobs.list",
            "jobs.cancel",
        ] {
            out.push(format!("lclstream.gateway.{name}.{verb}"));
        }
        out.push(format!("lclstream.gateway.{name}"));
        out.push(format!("_INBOX.{name}.x"));
        out.push(format!("_INBOX.{name}.notices"));
        out.push(format!("_INBOX.{name}.jobs.j1"));
        out.push(format!("_INBOX_{name}.x"));
        out.push(format!("_INBOX.{name}"));
        out.push(format!("lcls.mfx.{name}.1.det"));
        out.push(format!("lcls.cxi.{name}.1.det"));
        out.push(format!("lclstream.jobs.queue.{name}"));
        out.push(format!("lclstream.jobs.data.{name}"));
        out.push(format!("lclstream.jobs.data.{name}.x"));
        out.push(format!("lclstream.jobs.status.{name}"));
        out.push(format!("$KV.lclstream-jobs.{name}.j1"));
        // The gateways' shared quota counters, locks and meter leadership.
        out.push(format!("$KV.lclstream-gateway-state.usage.{name}"));
        out.push(format!("$KV.lclstream-gateway-state.lock.{name}"));
        out.push(format!("$KV.lclstream-gateway-live.gateway.{name}"));
        out.push(format!("$KV.other.{name}"));
        out.push(format!("$SYS.REQ.SERVER.{name}.KICK"));
        out.push(format!("$SYS.REQ.SERVER.{name}.CONNZ"));
        out.push(format!("$SYS.REQ.ACCOUNT.{name}.CONNZ"));
        out.push(format!("$JS.FC.LCLS_MFX.{name}.1"));
        out.push(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.LCLS_JOBS.{name}"
        ));
        out.push(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.LCLS_MFX.{name}"
        ));
        out.push(format!("$SRV.PING.{name}"));
    }
    for fixed in [
        "$SYS.REQ.USER.AUTH",
        "$SYS.REQ.SERVER.PING.CONNZ",
        "$SYS.REQ.SERVER.PING",
        "_INBOX.x",
        "_INBOX_GATEWAY.x",
        "$SRV.PING",
        "$SRV.INFO.lclstream-gateway",
        "lclstream.gateway",
        "lcls.mfx",
        ">",
        "*",
        "_INBOX.>",
        "_INBOX.*.>",
        "$JS.>",
        "$JS.ACK.>",
        "lcls.>",
        "$KV.>",
        "lclstream.gateway.>",
        "lclstream.gateway.*.request",
    ] {
        out.push(fixed.to_string());
    }
    // Pseudo-random token strings (fixed seed: the same subjects every run).
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut pool: Vec<String> = names.clone();
    pool.extend(
        [
            "$JS", "ACK", "API", "CONSUMER", "MSG", "NEXT", "INFO", "*", ">", "lcls", "mfx",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    for _ in 0..10_000 {
        let len = 1 + (next() % 13) as usize;
        let tokens: Vec<&str> = (0..len)
            .map(|_| pool[(next() % pool.len() as u64) as usize].as_str())
            .collect();
        out.push(tokens.join("."));
    }
    out.sort();
    out.dedup();
    out
}

fn tokens(subject: &str) -> Vec<&str> {
    subject.split('.').collect()
}

/// Whether `consumer` is one of `institution`'s slots under a quota of `slots`.
fn own_slot(institution: &str, slots: u32, consumer: &str) -> bool {
    parse_consumer_slot(institution, consumer).is_some_and(|k| k < slots)
}

/// The consumer an ack subject reaches, as nats-server routes it: the
/// default form has exactly 9 tokens (`$JS.ACK.<stream>.<consumer>` + 5), the
/// v2 form at least 11 (`$JS.ACK.<domain>.<hash>.<stream>.<consumer>` + 5 or
/// more). Anything else reaches no consumer.
fn ack_target(subject: &str) -> Option<(&str, &str)> {
    let t = tokens(subject);
    if t.len() < 2 || t[0] != "$JS" || t[1] != "ACK" {
        return None;
    }
    match t.len() {
        9 => Some((t[2], t[3])),
        n if n >= 11 => Some((t[4], t[5])),
        _ => None,
    }
}

/// What an institution owns, as a publisher in the partner account.
fn institution_owns_publish(id: &str, slots: u32, streams: &[&str], subject: &str) -> bool {
    let t = tokens(subject);
    let stream_ok = |s: &str| streams.contains(&s) || s == "LCLS_JOBS_DATA";
    if let Some((stream, consumer)) = ack_target(subject) {
        return stream_ok(stream) && own_slot(id, slots, consumer);
    }
    match t.as_slice() {
        ["$JS", "lclstream", "API", "CONSUMER", "MSG", "NEXT", stream, consumer]
        | ["$JS", "lclstream", "API", "CONSUMER", "INFO", stream, consumer] => {
            stream_ok(stream) && own_slot(id, slots, consumer)
        }
        ["lclstream", "gateway", inst, _, ..] => *inst == id,
        _ => false,
    }
}

/// What an institution may subscribe to: its own inbox, nothing else.
fn institution_owns_subscribe(id: &str, subject: &str) -> bool {
    let t = tokens(subject);
    t.len() >= 3 && t[0] == "_INBOX" && t[1] == id
}

/// What an agent of `instruments` with key `key` owns (facility account).
fn agent_owns_publish(key: &str, instruments: &[&str], subject: &str) -> bool {
    let streams: Vec<String> = instruments
        .iter()
        .map(|i| format!("LCLS_{}", i.to_uppercase()))
        .collect();
    let workers: Vec<String> = instruments.iter().map(|i| format!("jobs-{i}")).collect();
    let job_stores = ["LCLS_JOBS", "LCLS_JOBS_DATA", "KV_lclstream-jobs"];
    let t = tokens(subject);
    let _ = key;
    if let Some((stream, consumer)) = ack_target(subject) {
        return stream == "LCLS_JOBS" && workers.iter().any(|w| w == consumer);
    }
    match t.as_slice() {
        ["lcls", instrument, _, ..] => instruments.contains(instrument),
        ["$JS", "API", "INFO"] => true,
        ["$JS", "API", "STREAM", "CREATE" | "UPDATE" | "INFO", stream] => {
            streams.iter().any(|s| s == stream) || job_stores.contains(stream)
        }
        // Resume reads the last batch the agent stored in its own stream.
        ["$JS", "API", "STREAM", "MSG", "GET", stream] if streams.iter().any(|s| s == stream) => {
            true
        }
        ["$JS", "API", "CONSUMER", "CREATE", "LCLS_JOBS", consumer]
        | ["$JS", "API", "CONSUMER", "DURABLE", "CREATE", "LCLS_JOBS", consumer]
        | ["$JS", "API", "CONSUMER", "INFO", "LCLS_JOBS", consumer]
        | ["$JS", "API", "CONSUMER", "MSG", "NEXT", "LCLS_JOBS", consumer] => {
            workers.iter().any(|w| w == consumer)
        }
        ["$JS", "API", "CONSUMER", "CREATE", "LCLS_JOBS", consumer, "lclstream", "jobs", "queue", instrument] => {
            workers.iter().any(|w| w == consumer) && *consumer == format!("jobs-{instrument}")
        }
        ["$KV", "lclstream-jobs", _, ..] => true,
        ["$JS", "API", "DIRECT", "GET", "KV_lclstream-jobs", ..] => true,
        ["$JS", "API", "STREAM", "MSG", "GET", "KV_lclstream-jobs"] => true,
        ["lclstream", "jobs", "data" | "status", _job] => true,
        _ => false,
    }
}

fn inbox_of_key_owns(key: &str, subject: &str) -> bool {
    let t = tokens(subject);
    t.len() >= 2 && t[0] == format!("_INBOX_{key}")
}

/// The gateway's facility-side connection: consumer management on any
/// stream, the job stores, its own inbox; never a data subject, a stream
/// deletion, or another bucket.
fn service_owns_publish(subject: &str) -> bool {
    let t = tokens(subject);
    let job_stores = [
        "LCLS_JOBS",
        "LCLS_JOBS_DATA",
        "KV_lclstream-jobs",
        "KV_lclstream-gateway-state",
        "KV_lclstream-gateway-live",
    ];
    let gateway_buckets = ["lclstream-gateway-state", "lclstream-gateway-live"];
    match t.as_slice() {
        ["$KV", bucket, _, ..] if gateway_buckets.contains(bucket) => true,
        ["$JS", "API", "STREAM", "MSG", "GET", stream]
        | ["$JS", "API", "DIRECT", "GET", stream, ..]
            if stream
                .strip_prefix("KV_")
                .is_some_and(|b| gateway_buckets.contains(&b)) =>
        {
            true
        }
        ["$JS", "API", "INFO"] | ["$JS", "API", "STREAM", "NAMES" | "LIST"] => true,
        ["$JS", "API", "STREAM", "INFO", _] => true,
        ["$JS", "API", "STREAM", "CREATE" | "UPDATE", stream] => job_stores.contains(stream),
        ["$JS", "API", "STREAM", "PURGE", "LCLS_JOBS_DATA"] => true,
        ["$JS", "API", "STREAM", "MSG", "GET" | "DELETE", "LCLS_JOBS"] => true,
        ["$JS", "API", "DIRECT", "GET", "LCLS_JOBS"] => true,
        ["$JS", "API", "STREAM", "MSG", "GET", "KV_lclstream-jobs"] => true,
        ["$JS", "API", "DIRECT", "GET", "KV_lclstream-jobs", ..] => true,
        ["$JS", "API", "CONSUMER", "CREATE", _, ..] => true,
        ["$JS", "API", "CONSUMER", "DURABLE", "CREATE", _, _] => true,
        ["$JS", "API", "CONSUMER", "INFO" | "DELETE" | "PAUSE", _, _] => true,
        ["$JS", "API", "CONSUMER", "MSG", "NEXT", _, _] => true,
        ["$JS", "API", "CONSUMER", "LIST" | "NAMES", _] => true,
        ["$JS", "FC", ..] => true,
        ["$KV", "lclstream-jobs", _, ..] => true,
        ["lclstream", "jobs", "queue", _] => true,
        _ => false,
    }
}

fn service_owns_subscribe(subject: &str) -> bool {
    let t = tokens(subject);
    matches!(
        t.as_slice(),
        ["_INBOX_GATEWAY", _, ..]
            | ["lclstream", "jobs", "status", _]
            | [
                "$JS",
                "EVENT",
                "ADVISORY",
                "CONSUMER",
                "MAX_DELIVERIES",
                "LCLS_JOBS",
                _
            ]
    )
}

/// The gateway's partner-side connection: replies and notices into
/// institutions' inboxes; requests and discovery in.
fn front_owns_publish(subject: &str) -> bool {
    let t = tokens(subject);
    t.len() >= 3 && t[0] == "_INBOX"
}

fn front_owns_subscribe(subject: &str) -> bool {
    let t = tokens(subject);
    matches!(
        t.as_slice(),
        ["lclstream", "gateway", _, _] | ["lclstream", "gateway", _, "jobs", _] | ["$SRV", _, ..]
    )
}

/// A role under test.
struct Role {
    name: &'static str,
    permissions: Permissions,
    owns_publish: Box<dyn Fn(&str) -> bool>,
    owns_subscribe: Box<dyn Fn(&str) -> bool>,
    must_publish: Vec<String>,
    must_subscribe: Vec<String>,
}

fn roles() -> Vec<Role> {
    let streams = ["LCLS_MFX".to_string()];
    vec![
        Role {
            name: "institution ucsd",
            permissions: institution_permissions("ucsd", 2, &streams),
            owns_publish: Box::new(|s| institution_owns_publish("ucsd", 2, &["LCLS_MFX"], s)),
            owns_subscribe: Box::new(|s| institution_owns_subscribe("ucsd", s)),
            must_publish: vec![
                "$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_MFX.ucsd-c0".into(),
                "$JS.lclstream.API.CONSUMER.INFO.LCLS_MFX.ucsd-c1".into(),
                "$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_JOBS_DATA.ucsd-c1".into(),
                "$JS.ACK.LCLS_MFX.ucsd-c0.1.17.3.1795895131074560299.4".into(),
                "$JS.ACK._.Fx3k2.LCLS_MFX.ucsd-c1.1.17.3.1795895131074560299.4".into(),
                "$JS.ACK.hub.Fx3k2.LCLS_MFX.ucsd-c1.1.17.3.1795895131074560299.4.Zq9".into(),
                "lclstream.gateway.ucsd.request".into(),
                "lclstream.gateway.ucsd.jobs.submit".into(),
            ],
            must_subscribe: vec![
                "_INBOX.ucsd.Zx9pLq.*".into(),
                "_INBOX.ucsd.notices".into(),
                "_INBOX.ucsd.jobs.j1".into(),
            ],
        },
        Role {
            name: "institution a (a prefix of other ids)",
            permissions: institution_permissions("a", 3, &["LCLS_CXI".to_string()]),
            owns_publish: Box::new(|s| institution_owns_publish("a", 3, &["LCLS_CXI"], s)),
            owns_subscribe: Box::new(|s| institution_owns_subscribe("a", s)),
            must_publish: vec!["$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_CXI.a-c2".into()],
            must_subscribe: vec!["_INBOX.a.x.*".into()],
        },
        Role {
            name: "agent",
            permissions: agent_permissions(AGENT_KEY, &["mfx".to_string()]),
            owns_publish: Box::new(|s| agent_owns_publish(AGENT_KEY, &["mfx"], s)),
            owns_subscribe: Box::new(|s| inbox_of_key_owns(AGENT_KEY, s)),
            must_publish: vec![
                "lcls.mfx.mfxp1234.7.jungfrau".into(),
                "$JS.API.STREAM.CREATE.LCLS_MFX".into(),
                "$JS.API.STREAM.INFO.LCLS_MFX".into(),
                "$JS.API.STREAM.MSG.GET.LCLS_MFX".into(),
                "$JS.API.STREAM.CREATE.LCLS_JOBS_DATA".into(),
                "$JS.API.CONSUMER.CREATE.LCLS_JOBS.jobs-mfx.lclstream.jobs.queue.mfx".into(),
                "$JS.API.CONSUMER.MSG.NEXT.LCLS_JOBS.jobs-mfx".into(),
                "$JS.ACK.LCLS_JOBS.jobs-mfx.1.5.5.1795895131074560299.0".into(),
                "$KV.lclstream-jobs.ucsd.j1".into(),
                "$JS.API.DIRECT.GET.KV_lclstream-jobs.$KV.lclstream-jobs.ucsd.j1".into(),
                "lclstream.jobs.data.j1".into(),
                "lclstream.jobs.status.j1".into(),
            ],
            must_subscribe: vec![format!("_INBOX_{AGENT_KEY}.abc.*")],
        },
        Role {
            name: "gateway service (facility account)",
            permissions: gateway_service_permissions(),
            owns_publish: Box::new(service_owns_publish),
            owns_subscribe: Box::new(service_owns_subscribe),
            must_publish: vec![
                "$JS.API.CONSUMER.CREATE.LCLS_MFX.ucsd-c0.lcls.mfx.e1.>".into(),
                "$JS.API.CONSUMER.CREATE.LCLS_MFX.ucsd-c0".into(),
                "$JS.API.CONSUMER.DELETE.LCLS_MFX.ucsd-c0".into(),
                "$JS.API.CONSUMER.PAUSE.LCLS_MFX.ucsd-c0".into(),
                "$JS.API.CONSUMER.LIST.LCLS_MFX".into(),
                "$JS.API.STREAM.INFO.LCLS_MFX".into(),
                "$JS.API.STREAM.PURGE.LCLS_JOBS_DATA".into(),
                "$KV.lclstream-jobs.ucsd.j1".into(),
                "lclstream.jobs.queue.mfx".into(),
                "$KV.lclstream-gateway-state.usage.ucsd".into(),
                "$KV.lclstream-gateway-state.lock.ucsd".into(),
                "$KV.lclstream-gateway-live.meter.leader".into(),
                "$JS.API.DIRECT.GET.KV_lclstream-gateway-state.$KV.lclstream-gateway-state.usage.ucsd"
                    .into(),
                "$JS.API.STREAM.CREATE.KV_lclstream-gateway-live".into(),
            ],
            must_subscribe: vec![
                "_INBOX_GATEWAY.x.*".into(),
                "lclstream.jobs.status.*".into(),
            ],
        },
        Role {
            name: "gateway front (partner account)",
            permissions: gateway_front_permissions(),
            owns_publish: Box::new(front_owns_publish),
            owns_subscribe: Box::new(front_owns_subscribe),
            must_publish: vec!["_INBOX.ucsd.Zx9pLq.1".into(), "_INBOX.desy.notices".into()],
            must_subscribe: vec![
                "lclstream.gateway.*.request".into(),
                "lclstream.gateway.*.*".into(),
                "lclstream.gateway.*.jobs.*".into(),
                "$SRV.PING".into(),
            ],
        },
        Role {
            name: "callout",
            permissions: callout_user_permissions(),
            owns_publish: Box::new(|_| false),
            owns_subscribe: Box::new(|s| s == "$SYS.REQ.USER.AUTH"),
            must_publish: vec![],
            must_subscribe: vec!["$SYS.REQ.USER.AUTH".into()],
        },
        Role {
            name: "system",
            permissions: system_user_permissions(),
            owns_publish: Box::new(|s| {
                let t = tokens(s);
                matches!(
                    t.as_slice(),
                    ["$SYS", "REQ", "SERVER", "PING", "CONNZ"]
                        | ["$SYS", "REQ", "SERVER", _, "KICK"]
                )
            }),
            owns_subscribe: Box::new(|s| tokens(s).first() == Some(&"_INBOX_GATEWAY")),
            must_publish: vec![
                "$SYS.REQ.SERVER.PING.CONNZ".into(),
                "$SYS.REQ.SERVER.NABC.KICK".into(),
            ],
            must_subscribe: vec!["_INBOX_GATEWAY.x.*".into()],
        },
    ]
}

#[test]
fn every_allowed_subject_is_owned_by_the_role_that_holds_the_permission() {
    let subjects = generated_subjects();
    assert!(subjects.len() > 20_000, "{} subjects", subjects.len());
    let mut failures = Vec::new();
    for role in roles() {
        let mut allowed = 0;
        for subject in &subjects {
            if role.permissions.may_publish(subject) {
                allowed += 1;
                if !(role.owns_publish)(subject) {
                    failures.push(format!("{}: may publish {subject}", role.name));
                }
            }
            if role.permissions.may_subscribe(subject) && !(role.owns_subscribe)(subject) {
                failures.push(format!("{}: may subscribe {subject}", role.name));
            }
        }
        for subject in &role.must_publish {
            if !role.permissions.may_publish(subject) {
                failures.push(format!("{}: may not publish {subject}", role.name));
            }
        }
        for subject in &role.must_subscribe {
            if !role.permissions.may_subscribe(subject) {
                failures.push(format!("{}: may not subscribe {subject}", role.name));
            }
        }
        eprintln!(
            "{}: {allowed} of {} generated subjects publishable",
            role.name,
            subjects.len()
        );
    }
    failures.truncate(40);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_institutions_wildcards_never_reach_another_institution() {
    // Every pair of the tricky ids: no subject one may publish or subscribe
    // is owned by the other.
    let subjects = generated_subjects();
    for a in INSTITUTIONS {
        let pa = institution_permissions(a, 4, &["LCLS_MFX".to_string()]);
        for b in INSTITUTIONS.iter().filter(|b| **b != a) {
            for subject in &subjects {
                if pa.may_publish(subject) {
                    assert!(
                        !institution_owns_publish(b, 4, &["LCLS_MFX"], subject)
                            || institution_owns_publish(a, 4, &["LCLS_MFX"], subject),
                        "{a} may publish {subject}, which is {b}'s"
                    );
                }
                if pa.may_subscribe(subject) {
                    assert!(
                        !institution_owns_subscribe(b, subject),
                        "{a} may subscribe {subject}, which is {b}'s"
                    );
                }
            }
        }
    }
}
