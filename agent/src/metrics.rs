//! Agent metrics and a Prometheus text-format endpoint.
//!
//! Counters are plain atomics updated on the hot path; the endpoint is a tiny
//! HTTP/1.0 responder so the agent needs no web framework.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

/// Upper bounds (seconds) of the publish-ack latency histogram buckets.
const ACK_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Everything the agent counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events read from sources.
    pub events_read: AtomicU64,
    /// Events whose batch JetStream acknowledged.
    pub events_published: AtomicU64,
    /// Batches appended to the spool.
    pub batches_spooled: AtomicU64,
    /// Batches acknowledged.
    pub batches_published: AtomicU64,
    /// Messages acknowledged (chunks count separately).
    pub messages_published: AtomicU64,
    /// Batches republished from the spool at start-up or after a failure.
    pub batches_republished: AtomicU64,
    /// Acks that reported a duplicate (already stored).
    pub duplicates: AtomicU64,
    /// Uncompressed bytes of acknowledged batches.
    pub bytes_raw: AtomicU64,
    /// Wire (payload) bytes of acknowledged batches.
    pub bytes_wire: AtomicU64,
    /// Array and scalar bytes read from sources.
    pub bytes_read: AtomicU64,
    /// Files read completely.
    pub files_done: AtomicU64,
    /// Files skipped after an error.
    pub files_skipped: AtomicU64,
    /// Source errors (unreadable files, bad datasets).
    pub source_errors: AtomicU64,
    /// Publish failures (timeouts, disconnections, rejections).
    pub publish_errors: AtomicU64,
    /// Unacknowledged batches in the spool.
    pub spool_batches: AtomicU64,
    /// Unacknowledged bytes in the spool.
    pub spool_bytes: AtomicU64,
    ack_buckets: [AtomicU64; ACK_BUCKETS.len()],
    ack_count: AtomicU64,
    ack_sum_micros: AtomicU64,
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Records one publish-to-ack latency.
    pub fn observe_ack(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for (i, bound) in ACK_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.ack_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.ack_count.fetch_add(1, Relaxed);
        self.ack_sum_micros
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    /// The metrics in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 14] = [
            (
                "events_read_total",
                "Events read from sources.",
                &self.events_read,
            ),
            (
                "events_published_total",
                "Events acknowledged by JetStream.",
                &self.events_published,
            ),
            (
                "batches_spooled_total",
                "Batches appended to the spool.",
                &self.batches_spooled,
            ),
            (
                "batches_published_total",
                "Batches acknowledged by JetStream.",
                &self.batches_published,
            ),
            (
                "messages_published_total",
                "Messages acknowledged by JetStream.",
                &self.messages_published,
            ),
            (
                "batches_republished_total",
                "Batches republished from the spool.",
                &self.batches_republished,
            ),
            (
                "duplicates_total",
                "Acks reporting an already stored message.",
                &self.duplicates,
            ),
            (
                "bytes_in_total",
                "Uncompressed bytes of acknowledged batches.",
                &self.bytes_raw,
            ),
            (
                "bytes_out_total",
                "Wire bytes of acknowledged batches.",
                &self.bytes_wire,
            ),
            (
                "bytes_read_total",
                "Event data bytes read from sources.",
                &self.bytes_read,
            ),
            (
                "files_done_total",
                "Files read completely.",
                &self.files_done,
            ),
            (
                "files_skipped_total",
                "Files skipped after an error.",
                &self.files_skipped,
            ),
            ("source_errors_total", "Source errors.", &self.source_errors),
            (
                "publish_errors_total",
                "Publish failures.",
                &self.publish_errors,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP lclstream_agent_{name} {help}");
            let _ = writeln!(out, "# TYPE lclstream_agent_{name} counter");
            let _ = writeln!(out, "lclstream_agent_{name} {}", value.load(Relaxed));
        }
        let gauges: [(&str, &str, &AtomicU64); 2] = [
            (
                "spool_batches",
                "Unacknowledged batches in the spool.",
                &self.spool_batches,
            ),
            (
                "spool_bytes",
                "Unacknowledged bytes in the spool.",
                &self.spool_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP lclstream_agent_{name} {help}");
            let _ = writeln!(out, "# TYPE lclstream_agent_{name} gauge");
            let _ = writeln!(out, "lclstream_agent_{name} {}", value.load(Relaxed));
        }
        let raw = self.bytes_raw.load(Relaxed) as f64;
        let wire = self.bytes_wire.load(Relaxed) as f64;
        let ratio = if wire > 0.0 { raw / wire } else { 0.0 };
        let _ = writeln!(
            out,
            "# HELP lclstream_agent_compression_ratio Uncompressed over wire bytes."
        );
        let _ = writeln!(out, "# TYPE lclstream_agent_compression_ratio gauge");
        let _ = writeln!(out, "lclstream_agent_compression_ratio {ratio:.4}");
        let name = "lclstream_agent_publish_ack_seconds";
        let _ = writeln!(out, "# HELP {name} Time from publish to JetStream ack.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, bound) in ACK_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                self.ack_buckets[i].load(Relaxed)
            );
        }
        let count = self.ack_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.ack_sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let path = lclstream_nats::metrics_http::read_request_path(&mut stream).await;
            let path = path.as_str();
            let (status, body) = if path == "/metrics" || path == "/" {
                ("200 OK", metrics.render())
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
    fn renders_counters_ratio_and_histogram() {
        let m = Metrics::default();
        m.bytes_raw.store(1000, Relaxed);
        m.bytes_wire.store(250, Relaxed);
        m.observe_ack(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("lclstream_agent_compression_ratio 4.0000"));
        assert!(text.contains("lclstream_agent_publish_ack_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("lclstream_agent_publish_ack_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("lclstream_agent_publish_ack_seconds_count 1"));
    }
}
