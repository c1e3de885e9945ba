//! JSON lines output: one line per event with its scalars (arrays summarized
//! by dtype and shape), to stdout or to a file that doubles as the record of
//! what was already written.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use lclstream_nats::wire::{Event, Scalar};
use serde_json::{json, Map, Value};

use crate::sink::{BatchInfo, EventKey, EventSink};

enum Out {
    Stdout(std::io::Stdout),
    File(BufWriter<File>),
}

/// Writes events as JSON lines.
pub struct JsonlSink {
    out: Out,
    path: Option<PathBuf>,
    seen: HashSet<EventKey>,
}

/// The JSON line of one event.
pub fn event_line(batch: &BatchInfo, event: &Event) -> Value {
    let scalars: Map<String, Value> = event
        .scalars
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Bool(b) => json!(b),
                Scalar::Int(i) => json!(i),
                Scalar::UInt(u) => json!(u),
                Scalar::Float(f) => json!(f),
                Scalar::Float32(f) => json!(f),
                Scalar::Text(t) => json!(t),
            };
            (k.clone(), v)
        })
        .collect();
    let arrays: Map<String, Value> = event
        .arrays
        .iter()
        .map(|(k, a)| {
            (
                k.clone(),
                json!({"dtype": a.dtype.numpy_name(), "shape": a.shape}),
            )
        })
        .collect();
    json!({
        "experiment": batch.experiment,
        "run": batch.run,
        "source": batch.source,
        "index": event.index,
        "time_ns": event.time_ns,
        "scalars": scalars,
        "arrays": arrays,
    })
}

fn key_of_line(line: &str) -> Option<EventKey> {
    let v: Value = serde_json::from_str(line).ok()?;
    Some(EventKey {
        experiment: v.get("experiment")?.as_str()?.to_string(),
        run: u32::try_from(v.get("run")?.as_u64()?).ok()?,
        source: v.get("source")?.as_str()?.to_string(),
        index: v.get("index")?.as_u64()?,
    })
}

impl JsonlSink {
    /// Writes to stdout (no memory of earlier runs).
    pub fn stdout() -> JsonlSink {
        JsonlSink {
            out: Out::Stdout(std::io::stdout()),
            path: None,
            seen: HashSet::new(),
        }
    }

    /// Appends to `path`, first reading the events it already holds so that
    /// they are not written twice; a torn last line (crash mid-write) is cut off.
    pub fn open(path: &Path) -> anyhow::Result<JsonlSink> {
        let mut seen = HashSet::new();
        let mut good_len = 0u64;
        if path.exists() {
            let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
            let mut reader = BufReader::new(file);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .with_context(|| format!("reading {}", path.display()))?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                match key_of_line(line.trim_end()) {
                    Some(key) => {
                        seen.insert(key);
                        good_len += n as u64;
                    }
                    None => break,
                }
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.set_len(good_len)
            .with_context(|| format!("truncating a torn line in {}", path.display()))?;
        file.seek(SeekFrom::End(0))?;
        Ok(JsonlSink {
            out: Out::File(BufWriter::new(file)),
            path: Some(path.to_path_buf()),
            seen,
        })
    }

    /// Number of events known to be written (this run and earlier ones, for a file).
    pub fn known_events(&self) -> usize {
        self.seen.len()
    }
}

impl EventSink for JsonlSink {
    fn contains(&self, key: &EventKey) -> bool {
        self.seen.contains(key)
    }

    fn write(&mut self, batch: &BatchInfo, events: Vec<Event>) -> anyhow::Result<()> {
        for event in &events {
            let line = event_line(batch, event).to_string();
            match &mut self.out {
                Out::Stdout(out) => writeln!(out.lock(), "{line}")?,
                Out::File(out) => writeln!(out, "{line}")?,
            }
            if self.path.is_some() {
                self.seen.insert(batch.key(event.index));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        match &mut self.out {
            Out::Stdout(out) => out.flush()?,
            Out::File(out) => {
                out.flush()?;
                out.get_ref().sync_data()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lclstream_nats::wire::Event;

    fn batch() -> BatchInfo {
        BatchInfo {
            experiment: "e".into(),
            run: 3,
            source: "s".into(),
            subject: "lcls.mfx.e.3.s".into(),
            stream_sequence: 1,
            wire_bytes: 0,
        }
    }

    fn event(index: u64) -> Event {
        let mut e = Event {
            index,
            ..Default::default()
        };
        e.scalars.insert("x".into(), Scalar::Float(index as f64));
        e
    }

    #[test]
    fn reopening_skips_written_events_and_cuts_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = JsonlSink::open(&path).unwrap();
        sink.write(&batch(), vec![event(0), event(1)]).unwrap();
        sink.flush().unwrap();
        drop(sink);
        // A crash in the middle of a line.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        write!(file, "{{\"experiment\":\"e\",\"run\":3,\"sou").unwrap();
        drop(file);
        let mut sink = JsonlSink::open(&path).unwrap();
        assert_eq!(sink.known_events(), 2);
        assert!(sink.contains(&batch().key(1)));
        assert!(!sink.contains(&batch().key(2)));
        sink.write(&batch(), vec![event(2)]).unwrap();
        sink.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["index"], 2);
        assert_eq!(lines[2]["scalars"]["x"], 2.0);
    }
}
