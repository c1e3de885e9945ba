//! An agent reading only files runs without spool fsync (`spool.sync` auto
//! picks `off`). Killed with SIGKILL, and then with its whole spool gone (what
//! a machine crash may do to unsynced files), it resumes from the last batch
//! JetStream stores, re-reads the files from there, and every event ends up
//! in the stream exactly once, in order.

mod agent_support;

use std::time::Duration;

use agent_support::*;
use async_nats::jetstream;
use lclstream_agent::config::Preset;
use lclstream_agent::hdf5_source::Layout;
use lclstream_nats::server::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_file_agent_without_its_spool_resumes_from_jetstream_exactly_once() {
    let server = NatsServer::start_default().expect("nats-server starts");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // Four files: resuming by event index skips whole files and part of one.
    let files = write_run(&data, 4, 300, 64);
    let total = 1200;
    let spool = work.path().join("spool");
    let config_path = work.path().join("agent.toml");
    // Small batches, one publish in flight: the run lasts long enough to be
    // killed in the middle.
    let text = format!(
        r#"
instrument = "mfx"
experiment = "mfxp1234"
[nats]
url = "{}"
[spool]
dir = "{}"
checkpoint_interval_ms = 50
[batch]
max_events = 2
max_linger_ms = 50
[publish]
max_in_flight = 1
ack_timeout_ms = 2000
retry_initial_ms = 50
retry_max_ms = 500
drain_timeout_ms = 10000

[[sources]]
name = "jungfrau"
run = 4
[sources.hdf5]
glob = "{}/*.h5"
preset = "sample"
read_chunk_events = 4
"#,
        server.url(),
        spool.display(),
        data.display()
    );
    std::fs::write(&config_path, text).unwrap();
    let spawn = |log: &str| spawn_agent(&config_path, &work.path().join(log));
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let stored = || stored_messages(&js, "LCLS_MFX");

    let mut first = spawn("agent-1.log");
    // Polled often: the kill should land early in the run.
    assert!(
        wait_stored(
            &js,
            "LCLS_MFX",
            40,
            Duration::from_millis(5),
            Duration::from_secs(30)
        )
        .await,
        "the agent published"
    );
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    let at_kill = stored().await;
    assert!(
        at_kill < total / 2,
        "killed mid-run ({at_kill} of {} messages stored)",
        total / 2
    );
    // The machine crash: nothing of the unsynced spool survives.
    std::fs::remove_dir_all(&spool).unwrap();

    let mut second = spawn("agent-2.log");
    let status = wait_exit(
        &mut second,
        Duration::from_secs(60),
        "restarted agent did not finish",
    )
    .await;
    let log = std::fs::read_to_string(work.path().join("agent-2.log")).unwrap();
    assert!(status.success(), "restarted agent failed: {log}");
    assert!(
        log.contains("re-reading from there"),
        "the restart resumed from JetStream: {log}"
    );

    let stream = read_stream(&server.url(), "LCLS_MFX").await;
    let jungfrau = &stream["lcls.mfx.mfxp1234.4.jungfrau"];
    assert!(assert_exactly_once(jungfrau, total), "jungfrau in order");
    let expected = expected_events(&files, &Layout::preset(Preset::Sample));
    let got: Vec<_> = jungfrau
        .iter()
        .flat_map(|b| b.events.iter().cloned())
        .collect();
    assert_eq!(got, expected, "the same events as the files hold");
}
