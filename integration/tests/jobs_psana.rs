//! A publish job over an xtc2 run on disk: a worker with `[storage.psana]`
//! reads the run through psana and delivers the requested event range to the
//! requester exactly once, bit-exact against psana reading the file directly.
//! Needs psana (scripts/setup installs it into `.venv-psana`).

mod jobs_support;
mod partner_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use jobs_support::*;
use lclstream_gateway::jobs::protocol::{JobBatch, JobState};
use lclstream_gateway::policy::Quotas;
use lclstream_nats::protocol::jobs::EventRange;
use lclstream_nats::wire::Scalar;
use partner_support::*;

fn psana_python() -> PathBuf {
    let python = std::env::var_os("LCLSTREAM_PSANA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .join(".venv-psana/bin/python")
        });
    let ok = Command::new(&python)
        .args(["-c", "import psana, msgpack"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "psana is not installed at {}: run scripts/setup (it installs psana 4.3.4 into \
         .venv-psana) or set LCLSTREAM_PSANA_PYTHON",
        python.display()
    );
    python
}

const DIRECT_READ: &str = r#"
import sys
from psana import DataSource
run = next(DataSource(files=sys.argv[1], skip_calib_load="all").runs())
cspad = run.Detector("xppcspad")
for evt in run.events():
    print(evt.timestamp, cspad.raw.raw(evt).tobytes().hex())
"#;

#[tokio::test]
async fn a_psana_run_on_disk_is_published_by_a_job() {
    let python = psana_python();
    let s = setup_jobs(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], Quotas::default())]).await;
    let root = s.dir.path().join("data");
    let dir = root.join("mfxp1234/xtc");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mfxp1234-r0021-s000-c000.xtc2");
    let site = Command::new(&python)
        .args([
            "-c",
            "import os, psana; print(os.path.dirname(os.path.dirname(psana.__file__)))",
        ])
        .output()
        .unwrap();
    let site = PathBuf::from(String::from_utf8(site.stdout).unwrap().trim());
    let status = Command::new(site.join("bin/xtcwriter"))
        .arg("-f")
        .arg(&file)
        .args(["-n", "40"])
        .env(
            "LD_LIBRARY_PATH",
            format!(
                "{}:{}",
                site.join("psana").display(),
                site.join("lib").display()
            ),
        )
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "xtcwriter");
    let direct = Command::new(&python)
        .args(["-c", DIRECT_READ])
        .arg(&file)
        .output()
        .unwrap();
    let direct: Vec<(u64, String)> = String::from_utf8(direct.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (ts, hex) = l.split_once(' ').unwrap();
            (ts.parse().unwrap(), hex.to_string())
        })
        .collect();
    assert_eq!(direct.len(), 40);

    let toml = worker_toml(&s.server.url(), &root, "w1", 0.0).replace(
        "preset = \"sample\"",
        "pattern = \"{experiment}/xtc/*-r{run:04}-*.xtc2\"",
    ) + &format!(
        "[storage.psana]\npython = \"{}\"\nfields = [{{ detector = \"xppcspad\", field = \"cspad\" }}]\n",
        python.display()
    );
    let worker = start_worker(&toml);
    let ucsd = partner(&s.server.url(), "ucsd").await;
    let mut request = job("mfxp1234", 21);
    request.events = Some(EventRange { first: 5, last: 29 });
    request.batch = JobBatch {
        max_events: 4,
        max_bytes: 1 << 20,
    };
    let view = submit(&ucsd, &request).await.expect("job accepted");
    let (summary, received) = pull_job(&ucsd, &view, 25, Duration::from_secs(20)).await;
    assert_eq!(summary.events, 25, "{summary:?}");
    let received = received.lock().unwrap().clone();
    let indices: Vec<u64> = received.keys().map(|(_, i)| *i).collect();
    assert_eq!(indices, (5..30).collect::<Vec<_>>());
    for ((run, index), (times, event)) in &received {
        assert_eq!((*run, *times), (21, 1), "event {index} once, in run 21");
        let (ts, hex) = &direct[*index as usize];
        assert_eq!(event.scalars["timestamp"], Scalar::Int(*ts as i64));
        let got: String = event.arrays["cspad"]
            .data
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(&got, hex, "event {index} bit-exact");
    }
    let done = wait_record(
        &ucsd,
        &view.record.job,
        Duration::from_secs(20),
        "done",
        is(JobState::Done),
    )
    .await;
    assert_eq!(done.events, 25);
    assert_eq!(done.files, 1);
    worker.stop().await;
}
