//! Sites in their own Linux network namespaces, each joined to the root
//! namespace by a veth pair: the root namespace is the WAN between them.
//!
//! The root namespace does not forward packets (the namespaces get no route
//! beyond their own /30), so one site reaches another only through a relay the
//! test runs in the root namespace ([`super::relay::DelayRelay`]). Bandwidth
//! caps (`tc ... tbf`) sit on both ends of each veth; random loss and
//! partitions are `iptables` rules inside the site's namespace, on its veth
//! end, so the host's own firewall is never touched.
//!
//! Loss and partitions hit the site's WAN traffic only, told apart by who
//! opened the connection (`-m conntrack --ctdir`): a site dials out across
//! the WAN (to relays on its router address), while the test process dials
//! into the site as the site's own LAN would (publishers, health checks,
//! stream state), unaffected.
//!
//! Everything a [`Lab`] creates carries its process id and a sequence number
//! in its name and is deleted when the lab is dropped, also when a test panics.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Sites created by this process so far (names and subnets stay unique).
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// The shape of a site's link to the WAN.
#[derive(Debug, Clone, Copy)]
pub struct LinkShape {
    /// Bandwidth cap in Mbit/s, each direction (`tc tbf`); `None`: uncapped.
    pub rate_mbit: Option<u32>,
    /// Probability that a packet is dropped, each direction (0 for none).
    pub loss: f64,
}

impl LinkShape {
    /// An uncapped link without loss.
    pub fn clean() -> LinkShape {
        LinkShape {
            rate_mbit: None,
            loss: 0.0,
        }
    }
}

/// Runs a command, returning its stderr (or the spawn error) on failure.
pub fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{}`: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// One site: a namespace with one veth end (`addr`) facing the root
/// namespace's end (`router`).
#[derive(Debug, Clone)]
pub struct Site {
    /// Site name (for messages).
    pub name: String,
    /// Network namespace name.
    pub netns: String,
    /// Address of the site inside its namespace.
    pub addr: Ipv4Addr,
    /// Address of the root namespace on this site's link: what the site
    /// reaches, and where relays towards other sites listen.
    pub router: Ipv4Addr,
    /// Interface name inside the namespace.
    pub inner_if: String,
    /// Interface name in the root namespace.
    pub outer_if: String,
    partitioned: Arc<AtomicBool>,
    loss: Arc<Mutex<f64>>,
}

impl Site {
    /// The command prefix that runs a program inside the site's namespace.
    /// `ip netns exec` execs the program in place, so its process id is the
    /// program's and killing it by id works.
    pub fn launcher(&self) -> Vec<String> {
        ["ip", "netns", "exec", self.netns.as_str()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// A command running `program` inside the site's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]).arg(program);
        command
    }

    /// Runs `f` on a thread inside the site's namespace: sockets it opens
    /// belong to the site (and stay there when handed to another thread).
    pub fn within<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let path = format!("/run/netns/{}", self.netns);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {path}: {e}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| "the thread in the namespace panicked".to_string())?
    }

    fn iptables(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["ip", "netns", "exec", &self.netns, "iptables", "-w"];
        all.extend_from_slice(args);
        run(&all)
    }

    /// The match of WAN traffic: packets of connections the site opened
    /// (sites dial out across the WAN; the test process dials in as the
    /// site's LAN), on the site's link, in `chain`.
    fn wan_match(&self, chain: &'static str) -> [&str; 6] {
        match chain {
            "OUTPUT" => [
                "-o",
                &self.inner_if,
                "-m",
                "conntrack",
                "--ctdir",
                "ORIGINAL",
            ],
            _ => ["-i", &self.inner_if, "-m", "conntrack", "--ctdir", "REPLY"],
        }
    }

    fn loss_rules(&self, loss: f64, op: &str) -> Result<(), String> {
        let p = format!("{loss:.6}");
        for chain in ["INPUT", "OUTPUT"] {
            let mut args = vec![op, chain];
            args.extend_from_slice(&self.wan_match(chain));
            args.extend_from_slice(&[
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ]);
            self.iptables(&args)?;
        }
        Ok(())
    }

    fn partition_rules(&self, insert: bool) -> Result<(), String> {
        for chain in ["INPUT", "OUTPUT"] {
            let mut args = if insert {
                vec!["-I", chain, "1"]
            } else {
                vec!["-D", chain]
            };
            args.extend_from_slice(&self.wan_match(chain));
            args.extend_from_slice(&["-j", "DROP"]);
            self.iptables(&args)?;
        }
        Ok(())
    }

    /// Sets the random packet loss of the site's WAN traffic, each direction.
    pub fn set_loss(&self, loss: f64) -> Result<(), String> {
        let mut current = self.loss.lock().unwrap();
        if *current > 0.0 {
            self.loss_rules(*current, "-D")?;
            *current = 0.0;
        }
        if loss > 0.0 {
            self.loss_rules(loss, "-A")?;
            *current = loss;
        }
        Ok(())
    }

    /// Cuts the site off the WAN silently: every packet of the connections it
    /// opened is dropped, as when a router loses the path. Open TCP
    /// connections are not closed; they stall and retransmit until
    /// [`Site::heal`] or their own timeouts. The test's connections into the
    /// site (its LAN) keep working.
    pub fn partition(&self) -> Result<(), String> {
        if self.partitioned.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.partition_rules(true)
    }

    /// Ends a [`Site::partition`].
    pub fn heal(&self) -> Result<(), String> {
        if !self.partitioned.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        self.partition_rules(false)
    }
}

/// The namespaces and links of one test; deleted on drop.
pub struct Lab {
    tag: String,
    sites: Vec<Site>,
}

impl Lab {
    /// Checks that this process can build the lab (root, `ip`, `tc`,
    /// `iptables` with the statistic match) by building a throw-away one.
    pub fn new() -> Result<Lab, String> {
        match effective_uid() {
            Some(0) => {}
            Some(uid) => return Err(format!("they need root (running as uid {uid})")),
            None => return Err("the effective uid is unknown (/proc/self/status)".into()),
        }
        let lab = Lab {
            tag: format!("lcls-{}", std::process::id()),
            sites: Vec::new(),
        };
        let probe = format!(
            "{}-{}-probe",
            lab.tag,
            SEQUENCE.fetch_add(1, Ordering::SeqCst)
        );
        run(&["ip", "netns", "add", &probe])?;
        let checked = (|| {
            let exec = ["ip", "netns", "exec", probe.as_str()];
            let with = |rest: &[&str]| -> Vec<String> {
                exec.iter().chain(rest).map(|s| s.to_string()).collect()
            };
            for args in [
                with(&[
                    "ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
                ]),
                with(&[
                    "tc", "qdisc", "add", "dev", "probe0", "root", "tbf", "rate", "10mbit",
                    "burst", "32kbit", "latency", "400ms",
                ]),
                with(&[
                    "iptables",
                    "-w",
                    "-A",
                    "INPUT",
                    "-i",
                    "probe0",
                    "-m",
                    "conntrack",
                    "--ctdir",
                    "REPLY",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    "0.5",
                    "-j",
                    "DROP",
                ]),
            ] {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run(&args)?;
            }
            Ok::<(), String>(())
        })();
        let _ = run(&["ip", "netns", "del", &probe]);
        checked.map(|_| lab)
    }

    /// Creates site `name`: a namespace with loopback up and a veth pair to the
    /// root namespace on a /30 of 198.18.0.0/15 (the range reserved for
    /// network benchmarks, RFC 2544), shaped by `shape`.
    pub fn add_site(&mut self, name: &str, shape: LinkShape) -> Result<Site, String> {
        let pid = std::process::id();
        let (seq, subnet) = loop {
            let seq = SEQUENCE.fetch_add(1, Ordering::SeqCst);
            let index = (pid.wrapping_mul(64).wrapping_add(seq)) % 32768;
            let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + index * 4;
            let taken = Command::new("ip")
                .args(["-o", "-4", "addr", "show", "to"])
                .arg(format!("{}/30", Ipv4Addr::from(base)))
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false);
            if !taken {
                break (seq, base);
            }
            if seq > 10_000 {
                return Err("no free /30 in 198.18.0.0/15".into());
            }
        };
        let site = Site {
            name: name.to_string(),
            netns: format!("{}-{seq}-{name}", self.tag),
            router: Ipv4Addr::from(subnet + 1),
            addr: Ipv4Addr::from(subnet + 2),
            outer_if: format!("lw{pid:x}x{seq:x}r"),
            inner_if: format!("lw{pid:x}x{seq:x}n"),
            partitioned: Arc::default(),
            loss: Arc::default(),
        };
        // Registered first, so that a failure below still tears down what exists.
        self.sites.push(site.clone());
        let ns = site.netns.as_str();
        let (outer, inner) = (site.outer_if.as_str(), site.inner_if.as_str());
        let router = format!("{}/30", site.router);
        let addr = format!("{}/30", site.addr);
        run(&["ip", "netns", "add", ns])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        run(&[
            "ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns,
        ])?;
        run(&["ip", "addr", "add", &router, "dev", outer])?;
        run(&["ip", "link", "set", outer, "up"])?;
        run(&["ip", "-n", ns, "addr", "add", &addr, "dev", inner])?;
        run(&["ip", "-n", ns, "link", "set", inner, "up"])?;
        if let Some(rate) = shape.rate_mbit {
            let rate = format!("{rate}mbit");
            // Each end shapes what it sends: one cap per direction.
            let tbf = [
                "root", "tbf", "rate", &rate, "burst", "64kbit", "latency", "400ms",
            ];
            let mut outer_args = vec!["tc", "qdisc", "add", "dev", outer];
            outer_args.extend_from_slice(&tbf);
            run(&outer_args)?;
            let mut inner_args = vec![
                "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", inner,
            ];
            inner_args.extend_from_slice(&tbf);
            run(&inner_args)?;
        }
        // Connection tracking must see every WAN connection from its first
        // packet: a connection it picks up mid-stream takes its direction
        // from whichever packet comes first, so a later partition rule
        // (`--ctdir`) could miss it. A rule that only counts is enough to
        // turn tracking on in the namespace now.
        for chain in ["INPUT", "OUTPUT"] {
            let mut args = vec!["-A", chain];
            args.extend_from_slice(&site.wan_match(chain));
            site.iptables(&args)?;
        }
        site.set_loss(shape.loss)?;
        Ok(site)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for site in &self.sites {
            // Deleting the namespace removes its veth end (and so the pair),
            // its qdiscs and its iptables rules; the kernel does it
            // asynchronously, so the root end is deleted explicitly too.
            let _ = run(&["ip", "link", "del", &site.outer_if]);
            let _ = run(&["ip", "netns", "del", &site.netns]);
        }
    }
}
