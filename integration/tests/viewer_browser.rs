//! The web viewer in a real browser: `lclstream demo --view` (nats-server,
//! gateway with the auth callout, a synthetic detector publishing live, the
//! viewer on the partner's own consumer), then `integration/js/viewer_check.mjs`
//! drives headless Chromium (Debian `chromium`, via npm `playwright-core`,
//! both installed by scripts/setup) against the page. It checks that the image
//! changes between two screenshots, that the reported event rate is within
//! 30% of the source rate, that a subject filter the institution has no grant
//! for shows an error and no data, and keeps a screenshot in
//! `target/tmp/viewer-browser.png`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const RATE_HZ: f64 = 40.0;

#[test]
fn viewer_shows_a_live_stream_in_chromium() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        js.join("node_modules/playwright-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "run scripts/setup first: it installs Debian chromium and npm playwright-core (integration/js)"
    );
    let mut demo = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args([
            "demo", "--events", "20", "--height", "200", "--width", "300",
        ])
        .args(["--live-seconds", "0", "--rate-hz", &RATE_HZ.to_string()])
        .args(["--view", "--view-bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting lclstream demo --view");
    let pid = demo.id();
    let stdout = demo.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo: {line}");
            if let Some(url) = line.strip_prefix("viewer") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(120));
    let check = url.as_ref().ok().map(|url| {
        let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer-browser.png");
        let out = Command::new("node")
            .arg(js.join("viewer_check.mjs"))
            .arg(url)
            .arg(RATE_HZ.to_string())
            .arg(&screenshot)
            .arg("lcls.mfx.otherexperiment.>")
            .output()
            .expect("running node");
        (out, screenshot)
    });
    // Ctrl-C, as a person would stop it; the demo must then exit cleanly.
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let mut status = None;
    for _ in 0..300 {
        if let Ok(Some(s)) = demo.try_wait() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if status.is_none() {
        let _ = demo.kill();
    }
    let url = url.expect("the demo printed no viewer URL within 120 s");
    let (out, screenshot) = check.expect("browser check ran");
    assert!(
        out.status.success(),
        "browser check against {url} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("refused"),
        "the error names the refusal: {report}"
    );
    assert!(std::fs::metadata(&screenshot)
        .map(|m| m.len() > 1000)
        .unwrap_or(false));
    assert!(
        status.is_some_and(|s| s.success()),
        "demo --view did not exit cleanly after Ctrl-C: {status:?}"
    );
}
