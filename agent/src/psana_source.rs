//! psana source: LCLS-II xtc2 runs read by a Python helper.
//!
//! The agent cannot link psana (a Python package), so it runs the helper
//! `agent/python/psana_events.py` (embedded in the binary) under the
//! configured interpreter and reads framed events from its stdout: a 4-byte
//! big-endian length, then one msgpack map (see the helper's docstring).
//!
//! A psana run is re-readable in order, so the position of a source is the
//! event index alone: a restarted agent (or a restarted helper) tells the
//! helper how many events to skip. A helper that dies without reporting an
//! error is restarted at the next event (`restarts` times); one that reports
//! an error (import, file, detector, data) stops the source with that error.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lclstream_nats::wire::{Array, DType, Event, Scalar};
use serde::Deserialize;

use crate::config::PsanaConfig;
use crate::source::{ReaderContext, SourceMessage};
use crate::spool::Position;
use crate::AgentError;

/// The helper program, run with `python -c`.
pub const HELPER: &str = include_str!("../python/psana_events.py");

/// Environment variable naming the default interpreter.
pub const PYTHON_ENV: &str = "LCLSTREAM_PSANA_PYTHON";

/// Largest frame accepted from the helper.
const MAX_FRAME: usize = 1 << 30;

/// Bytes of the helper's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

/// The interpreter a source runs the helper with.
pub fn python_of(config: &PsanaConfig) -> PathBuf {
    config
        .python
        .clone()
        .or_else(|| std::env::var_os(PYTHON_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The helper's JSON argument for a source starting at event `skip`.
pub fn helper_arguments(config: &PsanaConfig, default_run: u32, skip: u64) -> String {
    let fields: Vec<serde_json::Value> = config
        .fields
        .iter()
        .map(|f| {
            serde_json::json!({
                "detector": f.detector,
                "data": f.data,
                "field": f.field,
            })
        })
        .collect();
    let mut args = serde_json::json!({
        "fields": fields,
        "skip": skip,
        "max_events": config.max_events,
        "skip_calib_load": config.skip_calib_load,
    });
    if config.files.is_empty() {
        args["exp"] = config.experiment.clone().into();
        args["run"] = config.psana_run.unwrap_or(default_run).into();
        if let Some(dir) = &config.dir {
            args["dir"] = dir.to_string_lossy().into_owned().into();
        }
    } else {
        let files: Vec<String> = config
            .files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        args["files"] = files.into();
    }
    args.to_string()
}

#[derive(Debug, Deserialize)]
struct WireArray {
    dtype: String,
    shape: Vec<u64>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// One frame from the helper.
#[derive(Debug, Deserialize)]
struct Frame {
    kind: String,
    #[serde(default)]
    index: u64,
    #[serde(default)]
    time_ns: u64,
    #[serde(default)]
    scalars: BTreeMap<String, Scalar>,
    #[serde(default)]
    arrays: BTreeMap<String, WireArray>,
    #[serde(default)]
    what: String,
    #[serde(default)]
    message: String,
}

/// How one helper process ended.
enum HelperEnd {
    /// Every event was read.
    Ended,
    /// The agent is stopping or the batcher is gone.
    Stopped,
    /// An error that a restart cannot fix.
    Fatal(String),
    /// The helper died without reporting why (crash, kill, truncated output).
    Died(String),
}

/// Runs a psana source until its run is read or the agent stops.
pub fn run_psana(
    config: &PsanaConfig,
    default_run: u32,
    ctx: &ReaderContext,
    resume: Option<Position>,
    tx: SyncSender<SourceMessage>,
) {
    let start = resume.map(|p| p.next_index).unwrap_or(0);
    let mut deliver = |event: Event| {
        let next = event.index + 1;
        let position = Position {
            file: None,
            file_event: next,
            next_index: next,
        };
        ctx.send(&tx, event, position)
    };
    match read_events(config, default_run, start, &|| ctx.stopping(), &mut deliver) {
        Ok(true) => {
            let _ = tx.send(SourceMessage::Done);
        }
        Ok(false) => {}
        Err(message) => {
            ctx.metrics
                .source_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = tx.send(SourceMessage::Failed(AgentError::Source {
                source_name: ctx.name.clone(),
                message,
            }));
        }
    }
}

/// Reads the events of a run from event `start` on, in order, into `deliver`
/// (which returns `false` to stop), restarting a helper that dies without
/// reporting an error. `Ok(true)`: the run was read to its end; `Ok(false)`:
/// stopped by `stopping` or `deliver`; `Err`: what failed.
pub fn read_events(
    config: &PsanaConfig,
    default_run: u32,
    start: u64,
    stopping: &dyn Fn() -> bool,
    deliver: &mut dyn FnMut(Event) -> bool,
) -> Result<bool, String> {
    let mut next = start;
    let mut restarts = 0;
    loop {
        let started_at = next;
        match run_helper(config, default_run, stopping, &mut next, deliver) {
            HelperEnd::Ended => return Ok(true),
            HelperEnd::Stopped => return Ok(false),
            HelperEnd::Fatal(message) => return Err(message),
            HelperEnd::Died(message) => {
                // A helper that made progress earns its restarts back.
                if next > started_at {
                    restarts = 0;
                }
                if restarts >= config.restarts || stopping() {
                    return Err(message);
                }
                restarts += 1;
                tracing::warn!(next_event = next, restarts, error = %message,
                    "psana helper died; restarting it at the next event");
            }
        }
    }
}

/// Marks every descriptor above stderr close-on-exec in the helper. The HDF5
/// library opens files without it, so a helper would otherwise hold the
/// agent's open files, and their locks, for as long as it runs.
fn close_inherited_descriptors(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure makes only async-signal-safe
    // system calls (close_range, fcntl) and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            let all = libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if all != 0 {
                // Kernels before 5.11: one descriptor at a time.
                for fd in 3..4096 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
}

/// Kills the helper when dropped (agent stopping, batcher gone, error).
struct HelperProcess(Child);

/// Kills a helper that sends nothing for `timeout` while the agent waits on
/// it. Time spent delivering events (the agent's own back-pressure) does not
/// count: only reads are watched.
struct StallWatch {
    started: Instant,
    /// Milliseconds since `started` + 1 when the current read began; 0 when not reading.
    reading_since: Arc<AtomicU64>,
    fired: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    timeout: Duration,
}

impl StallWatch {
    fn start(pid: u32, timeout: Duration) -> StallWatch {
        let watch = StallWatch {
            started: Instant::now(),
            reading_since: Arc::new(AtomicU64::new(0)),
            fired: Arc::new(AtomicBool::new(false)),
            done: Arc::new(AtomicBool::new(false)),
            timeout,
        };
        if timeout.is_zero() {
            return watch;
        }
        let (since, fired, done, started) = (
            watch.reading_since.clone(),
            watch.fired.clone(),
            watch.done.clone(),
            watch.started,
        );
        let tick = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                let began = since.load(Ordering::Relaxed);
                let now = started.elapsed().as_millis() as u64 + 1;
                if began != 0
                    && now.saturating_sub(began) > timeout.as_millis() as u64
                    && !done.load(Ordering::Relaxed)
                {
                    fired.store(true, Ordering::Relaxed);
                    // The pid is ours until `done`: the child is reaped only
                    // after the reads (and so this watch) have ended.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return;
                }
            }
        });
        watch
    }

    fn reading(&self) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.reading_since.store(now, Ordering::Relaxed);
    }

    fn idle(&self) {
        self.reading_since.store(0, Ordering::Relaxed);
    }

    /// What to say of a helper this watch killed, if it did.
    fn verdict(&self) -> Option<String> {
        self.fired.load(Ordering::Relaxed).then(|| {
            format!(
                "sent nothing for {} s (stall_timeout_secs) and was killed",
                self.timeout.as_secs()
            )
        })
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

impl Drop for HelperProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_helper(
    config: &PsanaConfig,
    default_run: u32,
    stopping: &dyn Fn() -> bool,
    next: &mut u64,
    deliver: &mut dyn FnMut(Event) -> bool,
) -> HelperEnd {
    let python = python_of(config);
    let mut command = Command::new(&python);
    command
        .arg("-c")
        .arg(HELPER)
        .arg(helper_arguments(config, default_run, *next))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    close_inherited_descriptors(&mut command);
    let child = command.spawn();
    let mut child = match child {
        Ok(c) => HelperProcess(c),
        Err(e) => {
            return HelperEnd::Fatal(format!(
                "cannot start the psana helper with Python interpreter {}: {e}; set \
                 `python` in [sources.psana] (or {PYTHON_ENV}) to an interpreter with psana \
                 installed (scripts/setup makes .venv-psana/bin/python)",
                python.display()
            ))
        }
    };
    let stderr_tail = Arc::new(Mutex::new(Vec::<u8>::new()));
    if let Some(mut stderr) = child.0.stderr.take() {
        let tail = stderr_tail.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                t.extend_from_slice(&buf[..n]);
                if t.len() > 2 * STDERR_TAIL {
                    let cut = t.len() - STDERR_TAIL;
                    t.drain(..cut);
                }
            }
        });
    }
    let Some(stdout) = child.0.stdout.take() else {
        return HelperEnd::Fatal("psana helper has no stdout".into());
    };
    // A small buffer keeps the helper at most a pipe's worth ahead of the
    // agent: it reads as fast as events are taken, not into memory.
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let watch = StallWatch::start(child.0.id(), Duration::from_secs(config.stall_timeout_secs));
    let describe_exit = |child: &mut HelperProcess, what: &str| -> String {
        // Stop watching before the child is reaped (its pid may be reused after).
        watch.done.store(true, Ordering::Relaxed);
        let status = child.0.wait();
        // Let the stderr thread catch up with what the dead process wrote.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let tail = stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&tail);
        let text = text.trim();
        let text: String = text
            .char_indices()
            .rev()
            .nth(STDERR_TAIL.min(1500))
            .map(|(i, _)| text[i..].to_string())
            .unwrap_or_else(|| text.to_string());
        let status = match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown status ({e})"),
        };
        format!(
            "psana helper ({}) {what}, {status}; its stderr: {text}",
            python.display()
        )
    };
    let mut started = false;
    loop {
        if stopping() {
            return HelperEnd::Stopped;
        }
        let mut len = [0u8; 4];
        watch.reading();
        if let Err(e) = reader.read_exact(&mut len) {
            if let Some(stalled) = watch.verdict() {
                // Hung (a stuck file system, a wedged psana): a restart may help.
                return HelperEnd::Died(describe_exit(&mut child, &stalled));
            }
            if !started {
                // It never got going (no msgpack, a broken interpreter):
                // starting it again would fail the same way.
                return HelperEnd::Fatal(describe_exit(&mut child, "could not start"));
            }
            let what = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                format!("ended its output before the end of the run (next event {next})")
            } else {
                format!("output unreadable: {e}")
            };
            return HelperEnd::Died(describe_exit(&mut child, &what));
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return HelperEnd::Fatal(format!("psana helper sent a frame of {len} bytes"));
        }
        let mut body = vec![0u8; len];
        if let Err(e) = reader.read_exact(&mut body) {
            let what = watch
                .verdict()
                .unwrap_or_else(|| format!("stopped mid-frame at event {next}: {e}"));
            return HelperEnd::Died(describe_exit(&mut child, &what));
        }
        watch.idle();
        let frame: Frame = match rmp_serde::from_slice(&body) {
            Ok(f) => f,
            Err(e) => return HelperEnd::Fatal(format!("psana helper sent a bad frame: {e}")),
        };
        match frame.kind.as_str() {
            "start" => started = true,
            "event" => {
                if !started || frame.index != *next {
                    return HelperEnd::Fatal(format!(
                        "psana helper sent event {} where event {next} was due",
                        frame.index
                    ));
                }
                let event = match event_of(frame) {
                    Ok(e) => e,
                    Err(message) => return HelperEnd::Fatal(message),
                };
                *next += 1;
                if !deliver(event) {
                    return HelperEnd::Stopped;
                }
            }
            "end" => {
                let _ = child.0.wait();
                return HelperEnd::Ended;
            }
            "error" => {
                let what = match frame.what.as_str() {
                    "import" => "psana is not usable",
                    "file" => "bad input",
                    "detector" => "bad detector configuration",
                    "data" => "bad event data",
                    _ => "helper failed",
                };
                return HelperEnd::Fatal(format!("psana {what}: {}", frame.message));
            }
            other => {
                return HelperEnd::Fatal(format!("psana helper sent unknown frame kind {other:?}"))
            }
        }
    }
}

fn event_of(frame: Frame) -> Result<Event, String> {
    let mut arrays = BTreeMap::new();
    for (name, a) in frame.arrays {
        let dtype = DType::parse(&a.dtype).ok_or_else(|| {
            format!(
                "event {}, field {name}: dtype {} is not a wire dtype",
                frame.index, a.dtype
            )
        })?;
        let array = Array::new(dtype, a.shape, a.data)
            .map_err(|e| format!("event {}, field {name}: {e}", frame.index))?;
        arrays.insert(name, array);
    }
    Ok(Event {
        index: frame.index,
        time_ns: frame.time_ns,
        scalars: frame.scalars,
        arrays,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PsanaField;

    fn config(files: Vec<PathBuf>) -> PsanaConfig {
        PsanaConfig::for_files(
            files,
            vec![PsanaField {
                detector: "xppcspad".into(),
                data: "raw".into(),
                field: None,
            }],
        )
    }

    /// A stand-in helper: a shell script whose n-th run sends a start frame
    /// and event n, then hangs without exiting; the third run sends nothing.
    fn hanging_helper(dir: &std::path::Path) -> PathBuf {
        #[derive(serde::Serialize)]
        struct TestFrame {
            kind: &'static str,
            index: u64,
        }
        let frame = |kind, index| {
            let body = rmp_serde::to_vec_named(&TestFrame { kind, index }).unwrap();
            let mut out = (body.len() as u32).to_be_bytes().to_vec();
            out.extend(body);
            out
        };
        for n in 0..2u64 {
            let mut bytes = frame("start", 0);
            bytes.extend(frame("event", n));
            std::fs::write(dir.join(format!("frames-{n}.bin")), bytes).unwrap();
        }
        let script = dir.join("python");
        let d = dir.display();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nn=$(cat '{d}/runs' 2>/dev/null || echo 0)\necho $((n+1)) > '{d}/runs'\n\
                 cat '{d}/frames-'$n.bin 2>/dev/null\nexec sleep 600\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    #[test]
    fn the_helper_inherits_no_descriptor_of_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        // Opened the way the HDF5 library opens files: without close-on-exec.
        let held = dir.path().join("held.h5");
        std::fs::write(&held, b"x").unwrap();
        let path = std::ffi::CString::new(held.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; the descriptor is closed below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        assert!(fd > 2);
        let script = dir.path().join("python");
        let listing = dir.path().join("fds.txt");
        std::fs::write(
            &script,
            format!("#!/bin/sh\nls -l /proc/$$/fd > '{}'\n", listing.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut config = config(vec!["/d/r.xtc2".into()]);
        config.python = Some(script);
        let result = read_events(&config, 1, 0, &|| false, &mut |_| true);
        // SAFETY: the descriptor opened above.
        unsafe { libc::close(fd) };
        assert!(result.is_err(), "a helper that sends nothing fails");
        let fds = std::fs::read_to_string(&listing).unwrap();
        assert!(fds.contains("pipe:"), "the listing is of the helper: {fds}");
        assert!(
            !fds.contains("held.h5"),
            "the helper inherited the file: {fds}"
        );
    }

    #[test]
    fn a_stalled_helper_is_killed_restarted_and_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(vec!["/d/r.xtc2".into()]);
        config.python = Some(hanging_helper(dir.path()));
        config.stall_timeout_secs = 1;
        config.restarts = 1;
        let mut indexes = Vec::new();
        let result = read_events(&config, 1, 0, &|| false, &mut |event| {
            indexes.push(event.index);
            true
        });
        let message = result.expect_err("a helper that hangs is an error in the end");
        assert!(message.contains("sent nothing for 1 s"), "{message}");
        // Each hung helper was killed and the next one started at the next
        // event; the third sent nothing at all, which used up the restart.
        assert_eq!(indexes, vec![0, 1], "{message}");
    }

    #[test]
    fn arguments_name_files_or_experiment_and_the_skip() {
        let args: serde_json::Value =
            serde_json::from_str(&helper_arguments(&config(vec!["/d/r.xtc2".into()]), 7, 12))
                .unwrap();
        assert_eq!(args["files"][0], "/d/r.xtc2");
        assert_eq!(args["skip"], 12);
        assert!(args.get("exp").is_none());
        let mut c = config(vec![]);
        c.experiment = Some("xpptut15".into());
        let args: serde_json::Value = serde_json::from_str(&helper_arguments(&c, 7, 0)).unwrap();
        assert_eq!(args["exp"], "xpptut15");
        assert_eq!(args["run"], 7);
    }
}
