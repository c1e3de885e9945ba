//! `lclstream init DIR` writes a deployment that runs from its README alone:
//! the test runs `init`, then exactly the commands of the README's ```sh
//! blocks (real nats-server with the auth callout, gateway, agent, sample
//! run, partner pull), and checks the partner received every event, with
//! the gateway's decision in the audit log.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lclstream_gateway::keys::GatewayKeys;
use lclstream_nats::server::{find_nats_server, free_port};

/// Children killed (by their own handle) when the test ends, pass or fail.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        // SIGTERM first: a `lclstream nats server` stops its nats-server
        // (SIGKILL would leave that running); then SIGKILL what is left.
        for (_, child) in &mut self.0 {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        for (_, child) in &mut self.0 {
            for _ in 0..100 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn readme_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            in_sh = !in_sh && info == "sh";
            continue;
        }
        if in_sh && !trimmed.is_empty() && !trimmed.starts_with('#') {
            commands.push(trimmed.to_string());
        }
    }
    commands
}

fn program(word: &str) -> PathBuf {
    match word {
        "lclstream" => PathBuf::from(env!("CARGO_BIN_EXE_lclstream-e2e")),
        "nats-server" => find_nats_server().expect("nats-server on PATH"),
        other => panic!("the README runs {other:?}, which the deployment does not install"),
    }
}

fn wait_for(what: &str, log: &Path, needle: &str, children: &mut Children) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        for (name, child) in &mut children.0 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{name} exited ({status}) before {what}:\n{text}");
            }
        }
        assert!(Instant::now() < deadline, "no {what} within 60 s:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn init_writes_a_deployment_whose_readme_commands_run_and_a_partner_pulls() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("lclstream");
    let port = free_port().unwrap();
    let monitor = free_port().unwrap();
    let metrics = free_port().unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .arg("init")
        .arg(&dir)
        .args([
            "--port",
            &port.to_string(),
            "--monitor-port",
            &monitor.to_string(),
        ])
        .args(["--storage-gib", "4", "--stream-gib", "1"])
        .args(["--gateway-metrics", &format!("127.0.0.1:{metrics}")])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let commands = readme_commands(&readme);
    assert_eq!(commands.len(), 5, "{commands:?}");

    operators_guide_shows_the_same_commands(&commands, &dir, port);

    let mut children = Children(Vec::new());
    for (i, command) in commands.iter().enumerate() {
        let (line, background) = match command.strip_suffix('&') {
            Some(line) => (line.trim(), true),
            None => (command.as_str(), false),
        };
        let words = shlex::split(line).expect("a shell command");
        let log = temp.path().join(format!("step-{i}.log"));
        let file = File::create(&log).unwrap();
        let mut process = Command::new(program(&words[0]));
        process
            .args(&words[1..])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        if background {
            let child = process.spawn().unwrap();
            children.0.push((line.to_string(), child));
            match words[0].as_str() {
                "nats-server" => wait_for("server ready", &log, "Server is ready", &mut children),
                _ if words.get(1).map(String::as_str) == Some("gateway") => {
                    wait_for("gateway ready", &log, "gateway running", &mut children)
                }
                // As the README says: the partner pulls once the stream exists.
                _ if words.get(1).map(String::as_str) == Some("agent") => {
                    wait_for("stream ready", &log, "stream ready", &mut children)
                }
                _ => {}
            }
        } else {
            let mut child = process.spawn().unwrap();
            let deadline = Instant::now() + Duration::from_secs(180);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!(
                        "{line} did not finish within 180 s:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            assert!(
                status.success(),
                "{line} failed:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    // The partner received every event of the sample run, once, into its file.
    let pull_log = std::fs::read_to_string(temp.path().join("step-4.log")).unwrap();
    assert!(
        pull_log.contains("\"events\":200") && pull_log.contains("\"duplicates_skipped\":0"),
        "expected 200 events at the partner; pull said:\n{pull_log}"
    );
    assert!(dir.join("received.h5").is_file());

    // The Python partner example of docs/partners.md pulls the same run
    // from this deployment, through the callout with the institution's seed.
    let python_ready = Command::new("python3")
        .args(["-c", "import nats, msgpack, lz4, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if python_ready {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/partner_pull.py");
        let output = Command::new("python3")
            .arg(&script)
            .args(["--url", &format!("nats://127.0.0.1:{port}")])
            .args(["--institution", "example-university", "--seed"])
            .arg(dir.join("keys/example-university.nk"))
            .args(["--subject", "lcls.mfx.mfxp1234.>", "--label", "python"])
            .args(["--idle-timeout", "5"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "partner_pull.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let events = String::from_utf8_lossy(&output.stdout).lines().count();
        assert_eq!(events, 200, "{}", String::from_utf8_lossy(&output.stderr));
    } else {
        eprintln!(
            "python3 with nats-py, msgpack, lz4 and numpy is missing: the Python partner example \
             is not run (pip install -r integration/python/requirements.txt)"
        );
    }
    let audit = std::fs::read_to_string(dir.join("log/audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"decision\":\"allow\"") && l.contains("example-university")),
        "{audit}"
    );
    assert!(dir.join("state").is_dir());

    // The gateway's Prometheus endpoint shows the partner's request, the
    // callout's answers, its quota state and its live connections (none now).
    let body = http_get(&format!("127.0.0.1:{metrics}"), "/metrics");
    for needle in [
        "lclstream_gateway_decisions_total{institution=\"example-university\",action=\"request\",decision=\"allow\"}",
        "lclstream_gateway_decisions_total{institution=\"example-university\",action=\"connect\",decision=\"allow\"}",
        "lclstream_gateway_bytes_metered_today{institution=\"example-university\"}",
        "lclstream_gateway_connections{institution=\"example-university\"}",
    ] {
        assert!(body.contains(needle), "metrics lack {needle}:\n{body}");
    }
    let requests = if python_ready { 2 } else { 1 };
    let needle = format!(
        "lclstream_gateway_quota_requests_last_hour{{institution=\"example-university\"}} {requests}"
    );
    assert!(body.contains(&needle), "metrics lack {needle}:\n{body}");
    let answered: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("lclstream_gateway_callout_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(answered >= 2, "callout answers counted: {answered}\n{body}");
    assert!(http_get(&format!("127.0.0.1:{metrics}"), "/other").starts_with("HTTP/1.0 404"));
}

/// A plain HTTP/1.0 GET; returns the whole response for /other, the body for /metrics.
fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    if path == "/metrics" {
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        response.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    } else {
        response
    }
}

/// docs/operators.md ("One host in one command") shows the commands `init`
/// writes into its README, for `/srv/lclstream` and the default port.
fn operators_guide_shows_the_same_commands(readme: &[String], dir: &Path, port: u16) {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operators.md"))
            .unwrap();
    let start = guide
        .find("## 2. One host in one command")
        .expect("section 2");
    let end = guide[start..]
        .find("\n## 3.")
        .map_or(guide.len(), |e| start + e);
    let shown: Vec<String> = readme_commands(&guide[start..end])
        .into_iter()
        // init and the repository's Python example are not in the deployment's README.
        .filter(|c| !c.starts_with("lclstream init") && !c.starts_with("python3"))
        .map(|c| {
            c.replace("/srv/lclstream", &dir.display().to_string())
                .replace("127.0.0.1:4222", &format!("127.0.0.1:{port}"))
        })
        .collect();
    let written: Vec<&str> = readme
        .iter()
        .map(|c| c.strip_suffix('&').unwrap_or(c).trim())
        .collect();
    assert_eq!(shown.len(), written.len(), "{shown:#?}\n{written:#?}");
    for command in &shown {
        assert!(
            written.contains(&command.as_str()),
            "docs/operators.md shows {command:?}, which init does not write:\n{written:#?}"
        );
    }
}

/// `lclstream nats render --gateway-keys` renders the callout (accounts,
/// issuer, xkey, system account) with TLS into the sites the production
/// topology lists in `auth.callout_sites`, fsync-before-ack on edge and
/// facility servers, and nats-server accepts the result (`-t`, with a
/// throwaway certificate in place of the production paths).
#[test]
fn render_puts_the_callout_where_the_topology_asks() {
    let temp = tempfile::tempdir().unwrap();
    let topology =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats/topologies/production-example.toml");
    let out = temp.path().join("out");
    let lclstream = env!("CARGO_BIN_EXE_lclstream-e2e");
    let refused = Command::new(lclstream)
        .args(["nats", "render"])
        .arg(&topology)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--gateway-keys"));
    let keys = temp.path().join("keys");
    let rendered = Command::new(lclstream)
        .args(["nats", "render"])
        .arg(&topology)
        .arg("--out")
        .arg(&out)
        .arg("--gateway-keys")
        .arg(&keys)
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let issuer = std::fs::read_to_string(keys.join("issuer.pub")).unwrap();
    let xkey = std::fs::read_to_string(keys.join("xkey.pub")).unwrap();
    let conf = |name: &str| std::fs::read_to_string(out.join(format!("{name}.conf"))).unwrap();
    for server in ["fac-1", "fac-2", "fac-3", "nersc-1", "nersc-2", "nersc-3"] {
        let text = conf(server);
        for needle in [
            "auth_callout",
            issuer.trim(),
            xkey.trim(),
            "system_account: SYS",
            "PARTNERS {",
            "tls {",
        ] {
            assert!(text.contains(needle), "{server}.conf lacks {needle:?}");
        }
        assert_eq!(
            text.contains("sync_interval: \"always\""),
            server.starts_with("fac"),
            "{server}"
        );
    }
    for edge in ["edge-mfx", "edge-cxi"] {
        let text = conf(edge);
        assert!(!text.contains("auth_callout"), "{edge}");
        assert!(text.contains("sync_interval: \"always\""), "{edge}");
    }

    // Gateways laid out per callout site (auth.gateways): one file each,
    // distinct ids, shared quota state, the site's servers, the TLS CA.
    let mut ids = std::collections::BTreeSet::new();
    for (site, count, servers) in [
        ("facility", 3, "nats-1.slac"),
        ("partner-nersc", 2, "nersc"),
    ] {
        for n in 1..=count {
            let path = out.join(format!("gateways/{site}-gw{n}.toml"));
            let config = lclstream_gateway::gateway::GatewayConfig::from_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(config.quota.shared, "{}", path.display());
            assert_eq!(config.quota.replicas, 3);
            ids.insert(config.quota.gateway_id.clone().unwrap());
            assert!(config.nats.url.contains(servers), "{}", config.nats.url);
            assert_eq!(config.nats.url.split(',').count(), 3);
            assert_eq!(
                config.nats.ca_file.as_deref(),
                Some(Path::new("/etc/lclstream/tls/ca.pem"))
            );
            let auth = config.auth.expect("callout");
            assert!(auth.callout);
            assert_eq!(auth.keys_dir, keys);
        }
    }
    assert_eq!(ids.len(), 5, "{ids:?}");

    // nats-server accepts the facility, partner and edge configurations.
    let Ok(nats_server) = find_nats_server() else {
        panic!("nats-server is not installed (scripts/setup installs it)");
    };
    let cert = temp.path().join("cert.pem");
    let key = temp.path().join("key.pem");
    let openssl = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=lclstream-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    if !openssl.is_ok_and(|o| o.status.success()) {
        eprintln!("openssl not available: skipping the nats-server -t check");
        return;
    }
    for server in ["fac-1", "nersc-1", "edge-mfx"] {
        let text = conf(server)
            .replace("/etc/lclstream/tls/server.pem", &cert.display().to_string())
            .replace(
                "/etc/lclstream/tls/server-key.pem",
                &key.display().to_string(),
            )
            .replace("/etc/lclstream/tls/ca.pem", &cert.display().to_string())
            .replace(
                "/var/lib/lclstream/nats",
                &temp.path().join("store").display().to_string(),
            );
        let path = temp.path().join(format!("check-{server}.conf"));
        std::fs::write(&path, text).unwrap();
        let check = Command::new(&nats_server)
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .env("LCLSTREAM_LEAF_PASSWORD", "leaf")
            .env("LCLSTREAM_DAQ_PASSWORD", "daq")
            .env("LCLSTREAM_EDGE_SYSTEM_PASSWORD", "system")
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "nats-server refuses {server}.conf: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

/// `lclstream nats server --gateway-keys DIR` runs with the callout: the
/// gateway's own users (from DIR) connect, any other key waits for a callout
/// answer that no gateway gives, and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_runs_with_the_callout_on_request() {
    use std::io::{BufRead, BufReader};
    let temp = tempfile::tempdir().unwrap();
    let keys = temp.path().join("keys");
    let port = free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args([
            "nats",
            "server",
            "--port",
            &port.to_string(),
            "--gateway-keys",
        ])
        .arg(&keys)
        .args(["--sync-interval", "always"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut children = Children(Vec::new());
    let stdout = child.stdout.take().unwrap();
    children.0.push(("nats server".into(), child));
    // Keep draining its stdout: a closed pipe would end the command at its next line.
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = first_tx.send(line);
        }
        for _ in lines {}
    });
    let first = tokio::task::spawn_blocking(move || {
        first_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("nats server prints its URL")
    })
    .await
    .unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    assert!(first.contains(&url), "{first}");

    let gateway = lclstream_gateway::keys::GatewayKeys::load_or_generate(&keys, true).unwrap();
    let service =
        async_nats::ConnectOptions::with_nkey(GatewayKeys::seed_of(&gateway.service_user))
            .connect(&url)
            .await;
    assert!(
        service.is_ok(),
        "the gateway's service user connects: {service:?}"
    );
    let stranger = nkeys::KeyPair::new_user();
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        async_nats::ConnectOptions::with_nkey(stranger.seed().unwrap()).connect(&url),
    )
    .await
    .expect("the server answers within 20 s");
    assert!(
        refused.is_err(),
        "a key not authorized by a callout is refused"
    );
}

/// An unreachable server is named: the agent's connection errors carry the URL.
#[test]
fn connection_failures_name_the_url() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("site");
    let port = free_port().unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .arg("init")
        .arg(&dir)
        .args(["--port", &port.to_string()])
        .output()
        .unwrap();
    assert!(init.status.success());
    let log = temp.path().join("agent.log");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["--log-format", "json", "agent", "--config"])
        .arg(dir.join("agent.toml"))
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&url) && text.contains("error") {
            break true;
        }
        if Instant::now() > deadline || agent.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        found,
        "no connection error naming {url}:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// docs/grafana-dashboard.json is valid JSON and every lclstream metric it
/// queries is one the agent or the gateway exports.
#[test]
fn grafana_dashboard_queries_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let agent = lclstream_agent::metrics::Metrics::default().render();
    let gateway = std::fs::read_to_string(root.join("gateway/src/metrics.rs")).unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                let name = word.strip_suffix("_bucket").unwrap_or(word);
                if name.starts_with("lclstream_agent_") {
                    assert!(agent.contains(name), "the agent exports no {name}");
                    checked += 1;
                } else if name.starts_with("lclstream_gateway_") {
                    assert!(gateway.contains(name), "the gateway exports no {name}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 12, "only {checked} lclstream metrics queried");
}
