//! Corrupt HDF5 files, missing datasets and bad configuration give the documented errors.

mod agent_support;

use std::process::Command;
use std::time::Duration;

use agent_support::*;
use lclstream_agent::{Agent, AgentError};
use lclstream_nats::server::NatsServer;

fn hdf5_source(glob: &str, on_error: &str, extra: &str) -> String {
    format!(
        r#"
[[sources]]
name = "jungfrau"
run = 1
[sources.hdf5]
glob = "{glob}"
preset = "sample"
on_error = "{on_error}"
{extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_files_are_skipped_or_stop_the_agent() {
    let server = NatsServer::start_default().expect("nats-server starts");
    let data = tempfile::tempdir().unwrap();
    let files = write_run(data.path(), 3, 20, 32);
    // File 1 truncated to half its size, and a file that is not HDF5 at all.
    let bytes = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(data.path().join("r0007-s01b.h5"), b"not an HDF5 file").unwrap();
    let glob = format!("{}/*.h5", data.path().display());

    // skip: the good files are published, the bad ones counted.
    let spool = tempfile::tempdir().unwrap();
    let skip = config(&server.url(), spool.path(), &hdf5_source(&glob, "skip", ""));
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        Agent::new(skip).run(std::future::pending()),
    )
    .await
    .expect("finishes")
    .expect("skip keeps going");
    assert_eq!(report.files_skipped, 2, "{report:?}");
    assert_eq!(report.files_done, 2);
    assert_eq!(report.events_published, 40);
    let stream = read_stream(&server.url(), "LCLS_MFX").await;
    let batches = &stream["lcls.mfx.mfxp1234.1.jungfrau"];
    assert!(assert_exactly_once(batches, 40));

    // stop: the agent stops with an error naming the file; what was read before is published.
    let spool = tempfile::tempdir().unwrap();
    let mut config = config(&server.url(), spool.path(), &hdf5_source(&glob, "stop", ""));
    config.sources[0].run = 2;
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        Agent::new(config).run(std::future::pending()),
    )
    .await
    .expect("finishes")
    .expect_err("stop stops");
    let text = err.to_string();
    assert!(matches!(err, AgentError::Hdf5 { .. }), "{text}");
    assert!(
        text.contains("r0007-s01.h5") && text.contains("cannot open"),
        "{text}"
    );
    let stream = read_stream(&server.url(), "LCLS_MFX").await;
    assert!(assert_exactly_once(
        &stream["lcls.mfx.mfxp1234.2.jungfrau"],
        20
    ));

    // skip, with every file bad: nothing was read, and the run fails.
    let spool = tempfile::tempdir().unwrap();
    let bad_only = format!("{}/r0007-s01*.h5", data.path().display());
    let mut bad_config = agent_support::config(
        &server.url(),
        spool.path(),
        &hdf5_source(&bad_only, "skip", ""),
    );
    bad_config.sources[0].run = 3;
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        Agent::new(bad_config).run(std::future::pending()),
    )
    .await
    .expect("finishes")
    .expect_err("a run of only skipped files fails")
    .to_string();
    assert!(
        err.contains("every file was skipped (2)") && err.contains("r0007-s01"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_dataset_names_file_and_dataset() {
    let server = NatsServer::start_default().expect("nats-server starts");
    let data = tempfile::tempdir().unwrap();
    write_run(data.path(), 1, 5, 16);
    let spool = tempfile::tempdir().unwrap();
    let glob = format!("{}/*.h5", data.path().display());
    let extra = r#"fields = [{ dataset = "/gas_detector/f_11_ENRC", field = "gas" }]"#;
    let config = config(
        &server.url(),
        spool.path(),
        &hdf5_source(&glob, "stop", extra),
    );
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        Agent::new(config).run(std::future::pending()),
    )
    .await
    .expect("finishes")
    .expect_err("missing dataset");
    let text = err.to_string();
    assert!(text.contains("r0007-s00.h5"), "{text}");
    assert!(
        text.contains("missing dataset /gas_detector/f_11_ENRC (field gas)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_matching_no_file_fails_naming_the_glob() {
    let server = NatsServer::start_default().expect("nats-server starts");
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    // A typo in the run number: files exist, none matches.
    write_run(data.path(), 1, 5, 16);
    let glob = format!("{}/r0070-*.h5", data.path().display());
    let config = config(&server.url(), spool.path(), &hdf5_source(&glob, "skip", ""));
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        Agent::new(config).run(std::future::pending()),
    )
    .await
    .expect("finishes")
    .expect_err("nothing to read is an error");
    let text = err.to_string();
    assert!(
        text.contains("r0070-*.h5") && text.contains("matches no file"),
        "{text}"
    );
}

#[test]
fn bad_config_is_refused_by_the_command_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let text = format!(
        "{}{}",
        config_head("nats://127.0.0.1:1", &dir.path().join("spool"))
            .replace("[batch]", "[batch]\nmax_evnts = 3"),
        hdf5_source("/nonexistent/*.h5", "skip", "")
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["agent", "--check", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent.toml") && stderr.contains("max_evnts"),
        "{stderr}"
    );

    // An environment override with a wrong key is refused the same way.
    let good = format!(
        "{}{}",
        config_head("nats://127.0.0.1:1", &dir.path().join("spool")),
        hdf5_source("/nonexistent/*.h5", "skip", "")
    );
    std::fs::write(&path, good).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["agent", "--check", "--config"])
        .arg(&path)
        .env("LCLSTREAM_SPOOL__MAX_BYTE", "5")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("max_byte"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["agent", "--check", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stream larger than the server's storage budget is refused by the server
/// (10047) on every try: the agent stops with an error naming both settings
/// instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_over_the_storage_budget_stops_the_agent_naming_the_settings() {
    let server = NatsServer::start_with(|config| {
        if let Some(js) = config.jetstream.as_mut() {
            js.max_file = 1024 * 1024 * 1024;
        }
    })
    .expect("nats-server starts");
    let data = tempfile::tempdir().unwrap();
    write_run(data.path(), 1, 4, 16);
    let glob = format!("{}/*.h5", data.path().display());
    let spool = tempfile::tempdir().unwrap();
    let mut config = config(&server.url(), spool.path(), &hdf5_source(&glob, "stop", ""));
    config.stream.max_bytes = Some(4 * 1024 * 1024 * 1024);
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        Agent::new(config).run(std::future::pending()),
    )
    .await
    .expect("the agent stops instead of retrying forever")
    .expect_err("the server refuses the stream");
    let text = err.to_string();
    assert!(matches!(err, AgentError::Nats(_)), "{text}");
    assert!(
        text.contains("max_bytes") && text.contains("max_file_store") && text.contains("LCLS_MFX"),
        "{text}"
    );
}
