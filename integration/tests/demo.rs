//! The README's main job, `lclstream demo`, runs end to end (a smaller run).

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn demo_verifies_every_event_and_keeps_its_files_on_request() {
    let keep = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["demo", "--events", "80", "--height", "64", "--width", "128"])
        .args(["--live-seconds", "1", "--rate-hz", "60", "--keep"])
        .arg(keep.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the demo starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the demo did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("every event arrived exactly once"),
        "{stdout}"
    );
    assert!(stdout.contains("agent               80 events"), "{stdout}");
    assert!(stdout.contains("live 60 Hz         60 events"), "{stdout}");
    assert!(keep.path().join("received.h5").is_file());
    let audit = std::fs::read_to_string(keep.path().join("audit.jsonl")).unwrap();
    assert!(audit
        .lines()
        .any(|l| l.contains("\"decision\":\"allow\"") && l.contains("demo-university")));
}
