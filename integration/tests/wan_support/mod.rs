//! An emulated wide-area network for tests: each site in its own Linux
//! network namespace ([`netns`]), links capped in bandwidth (`tc tbf`) with
//! random loss and partitions (`iptables` in the site's namespace), and the
//! delay of a long link added by a user-space relay ([`relay`]) because the
//! kernel here has no `netem`.
//!
//! ```text
//!   ns <site A>            root namespace (the WAN)              ns <site B>
//!   A.addr ---veth/tbf--- A.router   relay A->B   B.router ---veth/tbf--- B.addr
//! ```
//!
//! The root namespace does not route between sites: A reaches B only by
//! connecting to a relay listening on `A.router` that forwards to `B.addr`.
//! The test process itself lives in the root namespace and reaches every site
//! directly (its control connections: health checks, stream state), as an
//! operator on each site's LAN would.
//!
//! The tests need root, iproute2 (`ip`, `tc`) and iptables; [`lab_or_skip`]
//! says clearly why a test is skipped when they are missing.

#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod leaf;
pub mod netns;
pub mod pull_loop;
pub mod relay;
pub mod supercluster;

use std::process::Child;
use std::time::Duration;

pub use agent::WanAgent;
pub use netns::{Lab, LinkShape, Site};
pub use pull_loop::{assert_exactly_once, wait_until, written_indices, PullLoop, PullSpec};
pub use relay::{Delay, DelayRelay};

/// A lab, or `None` after printing why `test` is skipped.
pub fn lab_or_skip(test: &str) -> Option<Lab> {
    match Lab::new() {
        Ok(lab) => Some(lab),
        Err(why) => {
            eprintln!(
                "SKIPPED {test}: the emulated-WAN tests build network namespaces, veth pairs, \
                 tc tbf caps and iptables rules, and {why}. Run them as root with iproute2 and \
                 iptables installed (scripts/setup installs both)."
            );
            None
        }
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Guarded(pub Child);

impl Guarded {
    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
