//! The Python partner example (integration/python/partner_pull.py: nats-py,
//! msgpack, lz4, numpy) pulls a dataset through the gateway, acknowledges it,
//! and a second run with the same label resumes with nothing left.
//!
//! Skipped, with a message, when python3 lacks those packages (CI installs
//! them from integration/python/requirements.txt).

mod partner_support;

use std::path::Path;
use std::process::Command;

use lclstream_nats::synthetic::DetectorModel;
use partner_support::*;

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import nats, msgpack, lz4, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run_script(url: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/partner_pull.py");
    let output = Command::new("python3")
        .arg(&script)
        .args([
            "--url",
            url,
            "--institution",
            "ucsd",
            "--subject",
            "lcls.mfx.mfxp1234.>",
            "--label",
            "py",
            "--batch",
            "4",
            "--idle-timeout",
            "3",
        ])
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "partner_pull.py failed: {stderr}");
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let summary = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("summary line");
    (lines, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_partner_pulls_and_resumes() {
    if !python_ready() {
        eprintln!(
            "SKIPPED python_partner_pulls_and_resumes: python3 with nats-py, msgpack, lz4 and numpy \
             is needed (pip install -r integration/python/requirements.txt)"
        );
        return;
    }
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas())]).await;
    publish(&s.js, "mfxp1234", 8, 10, 3, 32).await;
    let url = s.server.url();

    let first_url = url.clone();
    let (lines, summary) = tokio::task::spawn_blocking(move || run_script(&first_url))
        .await
        .unwrap();
    assert_eq!(summary["resumed"], false);
    assert_eq!(summary["consumer"], "ucsd-c0");
    let mut indices: Vec<u64> = lines.iter().map(|l| l["index"].as_u64().unwrap()).collect();
    indices.sort();
    assert_eq!(indices, (0..30).collect::<Vec<u64>>());
    // Pixel sums agree with what Rust published.
    let model = DetectorModel {
        height: 32,
        width: 32,
        ..Default::default()
    };
    for line in lines.iter().take(5) {
        let i = line["index"].as_u64().unwrap();
        let event = model.event("jungfrau", i, 1_000 + i);
        let sum: u64 = event.arrays["jungfrau"]
            .to_u16()
            .unwrap()
            .iter()
            .map(|&p| p as u64)
            .sum();
        assert_eq!(
            line["arrays"]["jungfrau"]["sum"].as_u64().unwrap(),
            sum,
            "event {i}"
        );
        assert_eq!(
            line["arrays"]["jungfrau"]["shape"],
            serde_json::json!([32, 32])
        );
    }

    // Everything was acknowledged: the same label resumes with nothing left.
    let (lines, summary) = tokio::task::spawn_blocking(move || run_script(&url))
        .await
        .unwrap();
    assert_eq!(summary["resumed"], true);
    assert_eq!(summary["events"], 0);
    assert!(lines.is_empty());
}
