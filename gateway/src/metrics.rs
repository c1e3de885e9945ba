//! Gateway metrics on a Prometheus text-format endpoint (`[metrics] listen`).
//!
//! Counted as they happen (process-wide, like a default registry): decisions
//! by institution, action and outcome (every audit record), auth callout
//! answer latency. Read at each scrape: per-institution quota state (requests
//! in the last hour, bytes metered today and their limits) and, with the
//! callout, the live connections per institution (from the servers' CONNZ,
//! through the gateway's system user).
//!
//! `GET /health` answers JSON: this gateway's id, whether its NATS
//! connection is up, whether it answers the auth callout and whether it
//! holds the meter role (for load balancer and orchestrator probes).
//!
//! The endpoint shows institution ids and counts, no keys or data: it is for
//! the facility's monitoring network, bound to loopback by default.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::audit::Decision;
use crate::auth::revoke::list_connections;
use crate::auth::server_config::PARTNER_ACCOUNT;
use crate::quota::QuotaBook;
use crate::service::SharedPolicies;

/// Upper bounds (seconds) of the callout latency histogram buckets.
const CALLOUT_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// (label name, label value, action, decision) of one decision counter.
type DecisionKey = (&'static str, String, String, &'static str);

/// Counters updated as decisions and callout answers happen.
#[derive(Default)]
pub struct GatewayMetrics {
    /// Keyed by (label name, label value, action, decision): `institution`
    /// for institutions, `role` (agent, operator, unknown) for everyone else.
    decisions: Mutex<BTreeMap<DecisionKey, u64>>,
    callout_buckets: [AtomicU64; CALLOUT_BUCKETS.len()],
    callout_count: AtomicU64,
    callout_sum_micros: AtomicU64,
}

static METRICS: LazyLock<GatewayMetrics> = LazyLock::new(GatewayMetrics::default);

/// The process's gateway metrics.
pub fn global() -> &'static GatewayMetrics {
    &METRICS
}

impl GatewayMetrics {
    /// Counts one decision (called for every audit record). Decisions about
    /// an institution are labelled `institution="<id>"`; the others (agents,
    /// operators, unknown keys) `role="<role>"`, so they do not all pile up
    /// under an empty institution.
    pub fn record_decision(
        &self,
        institution: Option<&str>,
        role: Option<&str>,
        action: &str,
        decision: Decision,
    ) {
        let decision = match decision {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Info => "info",
        };
        let (label_name, label_value) = match institution {
            Some(id) => ("institution", id.to_string()),
            None => ("role", role.unwrap_or("unknown").to_string()),
        };
        let key = (label_name, label_value, action.to_string(), decision);
        let mut map = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(key).or_default() += 1;
    }

    /// Records how long the callout took to answer one authorization request.
    pub fn observe_callout(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bucket, bound) in self.callout_buckets.iter().zip(CALLOUT_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.callout_count.fetch_add(1, Relaxed);
        self.callout_sum_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    fn render_counters(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP lclstream_gateway_decisions_total Gateway decisions (every audit record) by institution (or role, for agents, operators and unknown keys), action and outcome.\n\
             # TYPE lclstream_gateway_decisions_total counter"
        );
        let map = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        for ((label_name, value, action, decision), n) in map.iter() {
            let _ = writeln!(
                out,
                "lclstream_gateway_decisions_total{{{label_name}=\"{}\",action=\"{}\",decision=\"{decision}\"}} {n}",
                label(value),
                label(action)
            );
        }
        drop(map);
        let name = "lclstream_gateway_callout_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer one auth callout request.\n# TYPE {name} histogram"
        );
        let count = self.callout_count.load(Relaxed);
        for (bucket, bound) in self.callout_buckets.iter().zip(CALLOUT_BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {:.6}",
            self.callout_sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What a scrape reads besides the counters.
#[derive(Clone)]
pub struct ScrapeSources {
    /// Institution policies (ids, keys, quota limits).
    pub policies: SharedPolicies,
    /// Quota counters.
    pub quotas: Arc<QuotaBook>,
    /// The gateway's system-account connection, to count live connections
    /// per institution (with the callout only).
    pub system: Option<async_nats::Client>,
    /// What `GET /health` reports.
    pub health: Health,
}

/// This gateway's liveness, for `GET /health` (JSON; 200 when its NATS
/// connection is up, 503 otherwise).
#[derive(Clone)]
pub struct Health {
    /// The gateway id (with `[quota] shared`).
    pub gateway_id: Option<String>,
    /// Whether this gateway runs the auth callout.
    pub callout: bool,
    /// Whether this gateway holds the meter role now.
    pub metering: Arc<std::sync::atomic::AtomicBool>,
    /// The gateway's main connection (the callout and request service use it).
    pub client: async_nats::Client,
    /// When the gateway started.
    pub started: time::OffsetDateTime,
}

impl Health {
    /// The JSON body and whether the gateway is healthy.
    pub fn report(&self) -> (bool, String) {
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        let body = serde_json::json!({
            "up": true,
            "gateway_id": self.gateway_id,
            "nats_connected": connected,
            "callout": self.callout && connected,
            "metering": self.metering.load(Relaxed),
            "started": self
                .started
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "version": env!("CARGO_PKG_VERSION"),
        });
        (connected, format!("{body}\n"))
    }
}

/// Renders every metric.
pub async fn render(sources: &ScrapeSources) -> String {
    let mut out = String::new();
    global().render_counters(&mut out);
    let policies: Vec<_> = {
        let map = sources.policies.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    };
    let gauges: [(&str, &str); 4] = [
        (
            "lclstream_gateway_quota_requests_last_hour",
            "Data requests counted in the last hour.",
        ),
        (
            "lclstream_gateway_quota_requests_per_hour_limit",
            "Data requests allowed per hour.",
        ),
        (
            "lclstream_gateway_bytes_metered_today",
            "Bytes delivered today (UTC), as metered.",
        ),
        (
            "lclstream_gateway_quota_bytes_per_day_limit",
            "Bytes allowed per UTC day.",
        ),
    ];
    for (i, (name, help)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for policy in &policies {
            let usage = sources.quotas.snapshot(&policy.id);
            let value = match i {
                0 => usage.requests_last_hour,
                1 => u64::from(policy.quotas.requests_per_hour),
                2 => usage.bytes_today,
                _ => policy.quotas.bytes_per_day,
            };
            let _ = writeln!(
                out,
                "{name}{{institution=\"{}\"}} {value}",
                label(&policy.id)
            );
        }
    }
    if let Some(system) = &sources.system {
        let listed = list_connections(
            system,
            PARTNER_ACCOUNT,
            None,
            Duration::from_millis(500),
            Duration::from_millis(100),
        )
        .await;
        let name = "lclstream_gateway_connections";
        let _ = writeln!(
            out,
            "# HELP {name} Live connections per institution (partner account, all servers that answered).\n# TYPE {name} gauge"
        );
        match listed {
            Ok(connections) => {
                for policy in &policies {
                    let n = connections
                        .iter()
                        .filter(|c| policy.keys.iter().any(|k| k.public == c.user))
                        .count();
                    let _ = writeln!(out, "{name}{{institution=\"{}\"}} {n}", label(&policy.id));
                }
            }
            Err(e) => tracing::warn!("metrics: cannot list connections: {e}"),
        }
    }
    out
}

/// Serves `GET /metrics` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    sources: ScrapeSources,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let path = lclstream_nats::metrics_http::read_request_path(&mut stream).await;
            let path = path.as_str();
            let (status, body) = if path == "/metrics" || path == "/" {
                ("200 OK", render(&sources).await)
            } else if path == "/health" {
                match sources.health.report() {
                    (true, body) => ("200 OK", body),
                    (false, body) => ("503 Service Unavailable", body),
                }
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            lclstream_nats::metrics_http::respond(&mut stream, status, &body).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_name_the_institution_or_the_role_never_an_empty_institution() {
        let metrics = GatewayMetrics::default();
        metrics.record_decision(
            Some("ucsd"),
            Some("institution"),
            "connect",
            Decision::Allow,
        );
        metrics.record_decision(None, Some("agent"), "connect", Decision::Allow);
        metrics.record_decision(None, Some("unknown"), "connect", Decision::Deny);
        metrics.record_decision(None, None, "job", Decision::Info);
        let mut out = String::new();
        metrics.render_counters(&mut out);
        for line in [
            "lclstream_gateway_decisions_total{institution=\"ucsd\",action=\"connect\",decision=\"allow\"} 1",
            "lclstream_gateway_decisions_total{role=\"agent\",action=\"connect\",decision=\"allow\"} 1",
            "lclstream_gateway_decisions_total{role=\"unknown\",action=\"connect\",decision=\"deny\"} 1",
            "lclstream_gateway_decisions_total{role=\"unknown\",action=\"job\",decision=\"info\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
        assert!(!out.contains("institution=\"\""), "{out}");
    }
}
