//! The agent publishes a sample run into JetStream exactly once, in order,
//! and the decoded events equal what the HDF5 files hold.

mod agent_support;

use std::time::Duration;

use agent_support::*;
use lclstream_agent::config::Preset;
use lclstream_agent::hdf5_source::{Hdf5Reader, Layout};
use lclstream_agent::process::{bin, crop, to_f64};
use lclstream_agent::sample::{write_sample, SampleSpec};
use lclstream_agent::Agent;
use lclstream_nats::server::NatsServer;
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::Scalar;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_run_arrives_exactly_once_in_order_and_identical() {
    let server = NatsServer::start_default().expect("nats-server starts");
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let files = write_run(data.path(), 3, 50, 48);
    let sources = format!(
        r#"
[[sources]]
name = "jungfrau"
run = 7
[sources.hdf5]
glob = "{}/*.h5"
preset = "sample"
read_chunk_events = 7
"#,
        data.path().display()
    );
    let agent = Agent::new(config(&server.url(), spool.path(), &sources));
    let report = tokio::time::timeout(RUN_TIMEOUT, agent.run(std::future::pending()))
        .await
        .expect("backfill finishes")
        .expect("agent succeeds");
    assert_eq!(report.events_read, 150);
    assert_eq!(report.events_published, 150);
    assert_eq!(report.files_done, 3);
    assert_eq!(report.spooled_at_exit, 0);
    assert!(
        report.raw_bytes > report.wire_bytes,
        "compressed: {report:?}"
    );

    let stream = read_stream(&server.url(), "LCLS_MFX").await;
    let batches = &stream["lcls.mfx.mfxp1234.7.jungfrau"];
    assert!(batches.len() >= 150 / 16, "{} batches", batches.len());
    assert!(assert_exactly_once(batches, 150), "events out of order");
    let expected = expected_events(&files, &Layout::preset(Preset::Sample));
    let got: Vec<_> = batches
        .iter()
        .flat_map(|b| b.events.iter().cloned())
        .collect();
    assert_eq!(got, expected);
    for b in batches {
        assert_eq!(
            (b.experiment.as_str(), b.run, b.source.as_str()),
            ("mfxp1234", 7, "jungfrau")
        );
    }
    // Independent check of one frame and one scalar against the generator.
    let model = DetectorModel {
        height: 48,
        width: 48,
        seed: 101,
        peaks: 8,
        ..Default::default()
    };
    assert_eq!(got[53].arrays["jungfrau"].to_u16().unwrap(), model.frame(3));
    assert_eq!(got[53].scalars["pulse_id"], Scalar::Int(1009));

    // A second run with the same spool resumes after the last file: nothing new.
    let agent = Agent::new(config(&server.url(), spool.path(), &sources));
    let report = tokio::time::timeout(RUN_TIMEOUT, agent.run(std::future::pending()))
        .await
        .expect("second run finishes")
        .expect("agent succeeds");
    assert_eq!(report.events_read, 0, "{report:?}");
    let again = read_stream(&server.url(), "LCLS_MFX").await;
    assert_eq!(indices(&again["lcls.mfx.mfxp1234.7.jungfrau"]).len(), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cxi_run_is_cropped_binned_and_oversized_events_are_chunked() {
    let server = NatsServer::start_default().expect("nats-server starts");
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let file = data.path().join("run.cxi");
    let spec = SampleSpec {
        height: 200,
        width: 200,
        ..SampleSpec::new(Preset::Cxi, 12)
    };
    write_sample(&file, &spec).unwrap();
    let sources = format!(
        r#"
[encode]
max_payload = 16384
[[sources]]
name = "cxi"
run = 2
[sources.hdf5]
file = "{}"
preset = "cxi"
[sources.processing]
fields = ["data"]
roi = [10, 190, 20, 180]
bin = 2
exclude = ["peak_y"]
"#,
        file.display()
    );
    let config = config(&server.url(), spool.path(), &sources);
    let report = tokio::time::timeout(RUN_TIMEOUT, Agent::new(config).run(std::future::pending()))
        .await
        .expect("backfill finishes")
        .expect("agent succeeds");
    assert_eq!(report.events_published, 12);
    assert!(
        report.messages > report.batches_published,
        "chunked: {report:?}"
    );

    let stream = read_stream(&server.url(), "LCLS_MFX").await;
    let batches = &stream["lcls.mfx.mfxp1234.2.cxi"];
    assert!(assert_exactly_once(batches, 12));
    let raw = Hdf5Reader::open(&file, &Layout::preset(Preset::Cxi))
        .unwrap()
        .read(0, 12, 0)
        .unwrap();
    for (got, raw) in batches.iter().flat_map(|b| b.events.iter()).zip(&raw) {
        let data = &got.arrays["data"];
        assert_eq!(data.shape, vec![90, 80]);
        let (_, cropped) = crop(
            &[200, 200],
            &to_f64(&raw.arrays["data"]),
            [10, 190, 20, 180],
        )
        .unwrap();
        let (_, binned) = bin(&[180, 160], &cropped, 2).unwrap();
        assert_eq!(to_f64(data), binned);
        assert!(!got.arrays.contains_key("peak_y"));
        assert_eq!(got.arrays["peak_x"], raw.arrays["peak_x"]);
        assert_eq!(got.scalars["n_peaks"], raw.scalars["n_peaks"]);
    }
}
