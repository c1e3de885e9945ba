//! The facility's agent in the WAN tests: the `lclstream` binary as a process
//! inside the facility's namespace, publishing a paced synthetic detector.

use std::path::Path;
use std::process::Stdio;

use super::{Guarded, Site};

/// What the agent publishes: `events` 32 x 32 frames at 80 Hz, 16 per
/// batch at most, as run 12 of `mfx`/`mfxp1234`.
pub struct WanAgent<'a> {
    /// Server URL(s) as the facility reaches them.
    pub url: &'a str,
    /// Facility user's seed file.
    pub seed_file: &'a Path,
    /// Config, spool and log go here.
    pub dir: &'a Path,
    /// Events to publish.
    pub events: u64,
    /// Whether the stream exists already (created by the topology).
    pub stream_exists: bool,
}

impl WanAgent<'_> {
    /// Writes `agent.toml` and starts the agent in `site` (log: `agent.log`).
    pub fn spawn(&self, site: &Site) -> Guarded {
        let stream = if self.stream_exists {
            "[stream]\ncreate = false\nduplicate_window_secs = 600\n"
        } else {
            ""
        };
        let config = self.dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                r#"
instrument = "mfx"
experiment = "mfxp1234"
[nats]
url = "{url}"
nkey_seed_file = "{seed}"
{stream}[spool]
dir = "{spool}"
[batch]
max_events = 16
max_linger_ms = 50
[[sources]]
name = "jungfrau"
run = 12
[sources.synthetic]
height = 32
width = 32
rate_hz = 80.0
events = {events}
"#,
                url = self.url,
                seed = self.seed_file.display(),
                spool = self.dir.join("spool").display(),
                events = self.events,
            ),
        )
        .unwrap();
        Guarded(
            site.command(env!("CARGO_BIN_EXE_lclstream-e2e"))
                .args(["agent", "--config"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.dir.join("agent.log")).unwrap())
                .spawn()
                .expect("agent starts"),
        )
    }

    /// Waits for the agent to finish its run successfully (bounded).
    pub fn wait(&self, agent: &mut Guarded) {
        let status =
            tokio::task::block_in_place(|| agent.wait_timeout(std::time::Duration::from_secs(60)));
        assert!(
            status.is_some_and(|s| s.success()),
            "the agent finishes its run ({status:?}): {}",
            std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
        );
    }
}
