//! psana source: LCLS-II xtc2 runs written by psana's own `xtcwriter`, read
//! through the agent's Python helper, arrive in JetStream exactly once and
//! bit-exact against psana reading the file directly, across a kill -9 of the
//! agent and of the helper; helper failures are clear agent errors.
//!
//! These tests need psana (scripts/setup installs it into `.venv-psana`, or
//! set LCLSTREAM_PSANA_PYTHON to an interpreter with psana); without it they
//! fail, naming what to install.

mod agent_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_support::*;
use async_nats::jetstream;
use lclstream_agent::Agent;
use lclstream_nats::server::NatsServer;
use lclstream_nats::wire::{Batch, Event, Scalar};

/// The interpreter with psana: `$LCLSTREAM_PSANA_PYTHON` or the workspace's `.venv-psana`.
fn psana_python() -> PathBuf {
    let python = std::env::var_os("LCLSTREAM_PSANA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // Not canonicalized: the venv's python is a symlink that must keep its path.
            let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .join(".venv-psana/bin/python");
            assert!(
                venv.exists(),
                "psana is not installed: run scripts/setup (it installs psana 4.3.4 into \
                 .venv-psana) or set LCLSTREAM_PSANA_PYTHON to a Python with psana"
            );
            venv
        });
    let ok = Command::new(&python)
        .args(["-c", "import psana, msgpack"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} cannot import psana and msgpack: run scripts/setup",
        python.display()
    );
    python
}

/// Writes an xtc2 run of `events` events with psana's `xtcwriter`.
fn xtcwriter(python: &Path, path: &Path, events: u64) {
    let out = Command::new(python)
        .args([
            "-c",
            "import os, psana; print(os.path.dirname(os.path.dirname(psana.__file__)))",
        ])
        .output()
        .unwrap();
    let site = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let libs = ["psana", "lib", "psana.libs"]
        .iter()
        .map(|d| site.join(d).display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let status = Command::new(site.join("bin/xtcwriter"))
        .arg("-f")
        .arg(path)
        .args(["-n", &events.to_string()])
        .env("LD_LIBRARY_PATH", libs)
        .stdout(Stdio::null())
        .status()
        .expect("xtcwriter runs");
    assert!(status.success(), "xtcwriter failed");
}

/// psana reading the file directly: per event the timestamp, the cspad raw
/// and image bytes, the hsd fex bytes and the epics PV (or null).
const DIRECT_READ: &str = r#"
import json, sys
from psana import DataSource
run = next(DataSource(files=sys.argv[1], skip_calib_load="all").runs())
cspad, hsd, pv = run.Detector("xppcspad"), run.Detector("xpphsd"), run.Detector("HX2:DVD:GCC:01:PMON")
for evt in run.events():
    raw, image, fex = cspad.raw.raw(evt), cspad.raw.image(evt), hsd.fex.calib(evt)
    print(json.dumps({"ts": evt.timestamp,
        "raw": [raw.dtype.str, list(raw.shape), raw.tobytes().hex()],
        "image": [image.dtype.str, list(image.shape), image.tobytes().hex()],
        "fex": [fex.dtype.str, list(fex.shape), fex.tobytes().hex()],
        "pv": pv(evt)}))
"#;

fn direct_read(python: &Path, file: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(python)
        .args(["-c", DIRECT_READ])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn source_table(python: &Path, file: &Path, extra: &str) -> String {
    format!(
        r#"
[[sources]]
name = "xpp"
run = 14
[sources.psana]
files = ["{}"]
python = "{}"
{extra}
fields = [
  {{ detector = "xppcspad", data = "raw", field = "cspad" }},
  {{ detector = "xppcspad", data = "image" }},
  {{ detector = "xpphsd", data = "fex.calib", field = "hsd_fex" }},
  {{ detector = "HX2:DVD:GCC:01:PMON", data = "epics" }},
]
"#,
        file.display(),
        python.display()
    )
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Asserts the stream's events equal psana's direct read, field by field.
fn assert_bit_exact(batches: &[Batch], expected: &[serde_json::Value]) {
    assert_exactly_once(batches, expected.len() as u64);
    let mut events: Vec<&Event> = batches.iter().flat_map(|b| b.events.iter()).collect();
    events.sort_by_key(|e| e.index);
    assert_eq!(events.len(), expected.len());
    let mut with_pv = 0;
    for (e, x) in events.iter().zip(expected) {
        let ts = x["ts"].as_u64().unwrap();
        assert_eq!(
            e.scalars["timestamp"],
            Scalar::Int(ts as i64),
            "event {}",
            e.index
        );
        let unix_ns = ((ts >> 32) + 631_152_000) * 1_000_000_000 + (ts & 0xffff_ffff);
        assert_eq!(e.time_ns, unix_ns, "event {}", e.index);
        for (field, key) in [
            ("cspad", "raw"),
            ("xppcspad_image", "image"),
            ("hsd_fex", "fex"),
        ] {
            let a = &e.arrays[field];
            let want = &x[key];
            assert_eq!(a.dtype.numpy_name(), want[0].as_str().unwrap(), "{field}");
            let shape: Vec<u64> = want[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(a.shape, shape, "event {} {field}", e.index);
            assert_eq!(
                to_hex(&a.data),
                want[2].as_str().unwrap(),
                "event {} {field}",
                e.index
            );
        }
        match x["pv"].as_f64() {
            Some(v) => {
                with_pv += 1;
                assert_eq!(e.scalars["HX2:DVD:GCC:01:PMON"], Scalar::Float(v));
            }
            None => assert!(!e.scalars.contains_key("HX2:DVD:GCC:01:PMON")),
        }
    }
    assert!(with_pv > 0, "the epics PV appears in some events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xtcwriter_run_streams_exactly_once_and_bit_exact() {
    let python = psana_python();
    let server = NatsServer::start_default().expect("nats-server starts");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("xpptut15-r0014.xtc2");
    xtcwriter(&python, &file, 200);
    let expected = direct_read(&python, &file);
    assert_eq!(expected.len(), 200);
    let config = config(
        &server.url(),
        &work.path().join("spool"),
        &source_table(&python, &file, ""),
    );
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        Agent::new(config).run(std::future::pending()),
    )
    .await
    .expect("agent finishes")
    .expect("agent succeeds");
    assert_eq!(report.events_read, 200);
    let stream = read_stream(&server.url(), "LCLS_MFX").await;
    let batches = &stream["lcls.mfx.mfxp1234.14.xpp"];
    assert!(assert_exactly_once(batches, 200), "in order");
    assert_bit_exact(batches, &expected);
}

/// The PIDs of processes whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) && pid != std::process::id() {
                pids.push(pid);
            }
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_helper_killed_mid_run_lose_and_duplicate_nothing() {
    let python = psana_python();
    let server = NatsServer::start_default().expect("nats-server starts");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("xpptut15-r0015.xtc2");
    let events = 3000;
    xtcwriter(&python, &file, events);
    let expected = direct_read(&python, &file);
    assert_eq!(expected.len() as u64, events);
    // Small batches, so the run spans many spool appends and publishes.
    let head = config_head(&server.url(), &work.path().join("spool"))
        .replace("max_events = 16", "max_events = 2");
    let config_path = work.path().join("agent.toml");
    std::fs::write(
        &config_path,
        format!("{head}{}", source_table(&python, &file, "")),
    )
    .unwrap();
    let spawn = |log: &str| spawn_agent(&config_path, &work.path().join(log));
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let stored = || stored_messages(&js, "LCLS_MFX");
    let stored_at_least = |at_least: u64| {
        wait_stored(
            &js,
            "LCLS_MFX",
            at_least,
            Duration::from_millis(20),
            Duration::from_secs(12),
        )
    };

    // 1. kill -9 of the helper: the agent restarts it at the next event.
    let mut agent = spawn("agent-1.log");
    assert!(stored_at_least(20).await, "the agent published");
    let helper_needle = file.display().to_string();
    let helpers: Vec<u32> = pids_with(&helper_needle)
        .into_iter()
        .filter(|p| *p != agent.id())
        .collect();
    assert_eq!(helpers.len(), 1, "one helper process runs: {helpers:?}");
    let status = Command::new("kill")
        .args(["-KILL", &helpers[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The agent takes what the helper wrote before it died (buffered in the
    // pipe), then notices and restarts it at the next event.
    let log1_path = work.path().join("agent-1.log");
    let mut restarted = false;
    for _ in 0..600 {
        let log = std::fs::read_to_string(&log1_path).unwrap_or_default();
        if log.contains("psana helper died; restarting it at the next event") {
            restarted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log1 = std::fs::read_to_string(&log1_path).unwrap();
    assert!(restarted, "the agent restarts its helper: {log1}");
    let after_restart = stored().await;

    // 2. kill -9 of the agent itself, a little later.
    assert!(
        stored_at_least(after_restart + 20).await,
        "the agent went on after its helper was restarted"
    );
    agent.kill().expect("SIGKILL");
    agent.wait().unwrap();
    let at_kill = stored().await;
    // The helper of the killed agent ends with its closed pipe.
    for _ in 0..100 {
        if pids_with(&helper_needle).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut second = spawn("agent-2.log");
    let status = wait_exit(
        &mut second,
        Duration::from_secs(120),
        "restarted agent did not finish",
    )
    .await;
    let log2 = std::fs::read_to_string(work.path().join("agent-2.log")).unwrap();
    assert!(status.success(), "restarted agent failed: {log2}");
    assert!(stored().await > at_kill, "the restart published the rest");
    assert!(
        (at_kill as usize) < (events / 2) as usize,
        "the agent was killed mid-run ({at_kill} of {} batches stored)",
        events / 2
    );

    let stream = read_stream(&server.url(), "LCLS_MFX").await;
    let batches = &stream["lcls.mfx.mfxp1234.14.xpp"];
    assert_exactly_once(batches, events);
    assert_bit_exact(batches, &expected);
}

async fn run_expecting_error(sources: &str) -> String {
    let server = NatsServer::start_default().expect("nats-server starts");
    let spool = tempfile::tempdir().unwrap();
    let config = config(&server.url(), spool.path(), sources);
    tokio::time::timeout(
        Duration::from_secs(60),
        Agent::new(config).run(std::future::pending()),
    )
    .await
    .expect("agent stops")
    .expect_err("agent fails")
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helper_failures_are_clear_agent_errors() {
    let python = psana_python();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("run.xtc2");
    xtcwriter(&python, &file, 10);

    let table =
        source_table(&python, &file, "").replace("detector = \"xpphsd\"", "detector = \"xpphsdd\"");
    let err = run_expecting_error(&table).await;
    assert!(
        err.contains("source xpp")
            && err.contains("bad detector configuration")
            && err.contains("'xpphsdd' is not in this run")
            && err.contains("xppcspad"),
        "{err}"
    );

    let missing = work.path().join("missing.xtc2");
    let err = run_expecting_error(&source_table(&python, &missing, "")).await;
    assert!(
        err.contains("bad input") && err.contains("missing.xtc2"),
        "{err}"
    );

    // An interpreter without psana (the test's plain python3 has msgpack only).
    let table = source_table(Path::new("python3"), &file, "");
    let plain_has_psana = Command::new("python3")
        .args(["-c", "import psana"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(true);
    if !plain_has_psana {
        let err = run_expecting_error(&table).await;
        assert!(
            err.contains("psana is not usable") && err.contains("cannot import psana"),
            "{err}"
        );
    }

    // An interpreter that cannot run the helper at all: no restarts, the cause named.
    let no_msgpack = work.path().join("python-without-msgpack");
    std::fs::write(
        &no_msgpack,
        format!(
            "#!/bin/sh\nexec {} -c 'import sys; sys.modules[\"msgpack\"] = None; code = sys.argv[1]; sys.argv = [\"-c\"] + sys.argv[2:]; exec(code)' \"$2\" \"$3\"\n",
            python.display()
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&no_msgpack).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&no_msgpack, permissions).unwrap();
    let err = run_expecting_error(&source_table(&no_msgpack, &file, "")).await;
    assert!(
        err.contains("could not start") && err.contains("cannot import msgpack"),
        "{err}"
    );

    let table = source_table(Path::new("/nonexistent/python"), &file, "");
    let err = run_expecting_error(&table).await;
    assert!(
        err.contains("cannot start the psana helper") && err.contains("/nonexistent/python"),
        "{err}"
    );

    // max_events bounds the run.
    let server = NatsServer::start_default().expect("nats-server starts");
    let config = config(
        &server.url(),
        &work.path().join("spool"),
        &source_table(&python, &file, "max_events = 4"),
    );
    let report = Agent::new(config)
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.events_read, 4);
}
