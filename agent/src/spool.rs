//! The write-ahead spool: encoded batches on disk until JetStream acknowledges them.
//!
//! Why: batch boundaries depend on timing, so after a crash re-reading and
//! re-batching would produce different `Nats-Msg-Id`s and break
//! deduplication. Instead every encoded batch is appended here
//! together with the source's read position *after* the batch, before it is
//! published ([`SpoolSync`] says when it reaches the disk: per batch, by
//! group commit for live sources, or never for re-readable files, which
//! resume from what JetStream holds after a machine crash). On restart, every spooled but unacknowledged batch is
//! republished with its original ids (JetStream drops those it already
//! stored, within the stream's duplicate window) and each source resumes
//! reading after its last spooled position.
//!
//! Layout of the spool directory:
//! - `seg-<first seq, 20 digits>.log`: append-only segments of frames
//!   `"LSP1" | body length u32 | CRC-32 of body u32 | seq u64 | body`, all
//!   little-endian, body = MessagePack [`SpoolRecord`]. A torn frame at the
//!   end of the last segment (crash during an append) is truncated on open.
//! - `checkpoint`: MessagePack [`Checkpoint`]: the acknowledged head (every
//!   seq up to it is acknowledged) and each source's position as of that
//!   head. Written to `checkpoint.tmp`, fsynced, renamed. Segments whose
//!   records are all at or below the head are deleted after a checkpoint.
//!
//! The spool is bounded by the bytes of unacknowledged frames: [`Spool::append`]
//! blocks while it is full, so reading stops (backpressure) but nothing is
//! dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use lclstream_nats::wire::{Encoded, WireMessage};
use serde::{Deserialize, Serialize};

use crate::AgentError;

const MAGIC: &[u8; 4] = b"LSP1";
const FRAME_HEADER: usize = 4 + 4 + 4 + 8;
/// Largest frame body accepted when reading (protects against a corrupt length).
const MAX_BODY: u64 = 1 << 31;

/// Where a source stands: the next event to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The file being read (HDF5 sources), as a path string.
    pub file: Option<String>,
    /// The next event to read within `file`.
    pub file_event: u64,
    /// The event index the next event gets (continues across files).
    pub next_index: u64,
}

/// One message of a spooled batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolMessage {
    /// Headers as (name, value) pairs, in order.
    pub headers: Vec<(String, String)>,
    /// Payload bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl SpoolMessage {
    /// Converts a codec message.
    pub fn from_wire(message: &WireMessage) -> SpoolMessage {
        let mut headers = Vec::new();
        for (name, values) in message.headers.iter() {
            for value in values {
                headers.push((name.to_string(), value.as_str().to_string()));
            }
        }
        SpoolMessage {
            headers,
            payload: message.payload.to_vec(),
        }
    }

    /// Converts back into headers and payload for publishing.
    pub fn into_wire(self) -> WireMessage {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(name.as_str(), value.as_str());
        }
        WireMessage {
            headers,
            payload: Bytes::from(self.payload),
        }
    }
}

/// One encoded batch in the spool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolRecord {
    /// Spool sequence number (from 1, increasing).
    pub seq: u64,
    /// Source name.
    pub source: String,
    /// Subject to publish to.
    pub subject: String,
    /// Batch id.
    pub batch_id: String,
    /// First event index.
    pub first: u64,
    /// Last event index.
    pub last: u64,
    /// Number of events.
    pub events: u32,
    /// Uncompressed document size.
    pub raw_size: u64,
    /// Payload bytes over all messages.
    pub wire_size: u64,
    /// The source's position after this batch.
    pub position: Position,
    /// The messages, in publishing order.
    pub messages: Vec<SpoolMessage>,
}

impl SpoolRecord {
    /// A record (without seq yet) for an encoded batch.
    pub fn new(
        source: &str,
        subject: &str,
        encoded: &Encoded,
        first: u64,
        last: u64,
        events: u32,
        position: Position,
    ) -> SpoolRecord {
        SpoolRecord {
            seq: 0,
            source: source.to_string(),
            subject: subject.to_string(),
            batch_id: encoded.id.clone(),
            first,
            last,
            events,
            raw_size: encoded.raw_size as u64,
            wire_size: encoded.wire_size as u64,
            position,
            messages: encoded
                .messages
                .iter()
                .map(SpoolMessage::from_wire)
                .collect(),
        }
    }
}

/// The persisted acknowledged head.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every seq up to and including this one is acknowledged.
    pub acked: u64,
    /// Each source's position as of `acked`.
    pub positions: HashMap<String, Position>,
}

/// Spool limits.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Largest number of unacknowledged bytes.
    pub max_bytes: u64,
    /// Segment size at which a new segment is started.
    pub segment_bytes: u64,
    /// When appended records reach the disk.
    pub sync: SpoolSync,
}

/// When spooled records are made durable (fsync).
///
/// A process killed with `kill -9` loses nothing the spool wrote, synced or
/// not: the page cache belongs to the kernel. fsync protects only against a
/// crash of the machine itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolSync {
    /// One fsync per appended batch, before it can be published.
    EveryBatch,
    /// Group commit: before the publisher sends a record, one fsync covers
    /// every record appended so far.
    #[default]
    Group,
    /// No fsync of segments or checkpoint: for sources that can be re-read,
    /// whose resume point after a machine crash comes from JetStream.
    Off,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    last_seq: u64,
    path: PathBuf,
    bytes: u64,
}

struct Pending {
    bytes: u64,
    source: String,
    position: Position,
}

struct Inner {
    next_seq: u64,
    acked: u64,
    acked_out_of_order: BTreeSet<u64>,
    pending: BTreeMap<u64, Pending>,
    unacked_bytes: u64,
    positions: HashMap<String, Position>,
    acked_positions: HashMap<String, Position>,
    persisted_acked: u64,
    segments: Vec<Segment>,
    closed: bool,
}

/// What the spool held when opened.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Each source's position after its last spooled batch.
    pub positions: HashMap<String, Position>,
    /// Spooled batches not yet acknowledged (republished first).
    pub pending_batches: u64,
    /// Their bytes.
    pub pending_bytes: u64,
    /// Bytes of a torn frame that were truncated.
    pub truncated_bytes: u64,
    /// Time since the oldest segment holding unacknowledged batches was last written.
    pub oldest_pending_age: Option<Duration>,
}

/// The write-ahead spool; shared by the batchers (append) and the publisher (read, ack).
pub struct Spool {
    dir: PathBuf,
    options: SpoolOptions,
    inner: Mutex<Inner>,
    /// The active segment's file; held across a whole append.
    writer: Mutex<Option<File>>,
    /// Every seq up to this one is on disk (group commit).
    synced: Mutex<u64>,
    space: Condvar,
    appended: tokio::sync::Notify,
    gauges: std::sync::OnceLock<std::sync::Arc<crate::metrics::Metrics>>,
}

fn io_err(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |e| AgentError::Spool {
        path,
        message: format!("{what}: {e}"),
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

/// Reads one frame at the reader's position: `Ok(None)` at a clean end,
/// `Err(offset)` for a torn or corrupt frame.
fn read_frame<R: Read>(reader: &mut R, remaining: u64) -> Result<Option<(u64, Vec<u8>)>, String> {
    if remaining == 0 {
        return Ok(None);
    }
    if remaining < FRAME_HEADER as u64 {
        return Err(format!(
            "{remaining} trailing bytes are shorter than a frame header"
        ));
    }
    let mut header = [0u8; FRAME_HEADER];
    reader
        .read_exact(&mut header)
        .map_err(|e| format!("reading a frame header: {e}"))?;
    if &header[..4] != MAGIC {
        return Err("bad frame magic".into());
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as u64;
    let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    if len > MAX_BODY || len > remaining - FRAME_HEADER as u64 {
        return Err(format!(
            "frame of seq {seq} declares {len} bytes beyond the end"
        ));
    }
    let mut body = vec![0u8; len as usize];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("reading frame of seq {seq}: {e}"))?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[12..20]);
    hasher.update(&body);
    if hasher.finalize() != crc {
        return Err(format!("checksum mismatch in frame of seq {seq}"));
    }
    Ok(Some((seq, body)))
}

fn encode_frame(seq: u64, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER + body.len());
    frame.extend_from_slice(MAGIC);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(body);
    frame.extend_from_slice(&hasher.finalize().to_le_bytes());
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(body);
    frame
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering what it holds.
    pub fn open(dir: &Path, options: SpoolOptions) -> Result<(Spool, Recovery), AgentError> {
        fs::create_dir_all(dir).map_err(io_err(dir, "creating the spool directory"))?;
        let checkpoint_path = dir.join("checkpoint");
        let checkpoint = match fs::read(&checkpoint_path) {
            Ok(bytes) => {
                rmp_serde::from_slice::<Checkpoint>(&bytes).map_err(|e| AgentError::Spool {
                    path: checkpoint_path.clone(),
                    message: format!("corrupt checkpoint: {e}"),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
            Err(e) => return Err(io_err(&checkpoint_path, "reading the checkpoint")(e)),
        };
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)
            .map_err(io_err(dir, "listing the spool"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let seq = name
                    .strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some((seq, e.path()))
            })
            .collect();
        names.sort();
        let mut recovery = Recovery::default();
        let mut positions = checkpoint.positions.clone();
        let mut pending = BTreeMap::new();
        let mut segments = Vec::new();
        let mut max_seq = checkpoint.acked;
        let count = names.len();
        for (i, (first_seq, path)) in names.into_iter().enumerate() {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path, "opening a segment"))?;
            let size = file
                .metadata()
                .map_err(io_err(&path, "reading segment size"))?
                .len();
            let mut reader = std::io::BufReader::new(&mut file);
            let mut offset = 0u64;
            let mut last_seq = first_seq.saturating_sub(1);
            loop {
                match read_frame(&mut reader, size - offset) {
                    Ok(None) => break,
                    Ok(Some((seq, body))) => {
                        let frame_len = (FRAME_HEADER + body.len()) as u64;
                        offset += frame_len;
                        last_seq = seq;
                        max_seq = max_seq.max(seq);
                        if seq > checkpoint.acked {
                            let record: SpoolRecord =
                                rmp_serde::from_slice(&body).map_err(|e| AgentError::Spool {
                                    path: path.clone(),
                                    message: format!("undecodable record seq {seq}: {e}"),
                                })?;
                            positions.insert(record.source.clone(), record.position.clone());
                            recovery.pending_batches += 1;
                            recovery.pending_bytes += frame_len;
                            pending.insert(
                                seq,
                                Pending {
                                    bytes: frame_len,
                                    source: record.source,
                                    position: record.position,
                                },
                            );
                        }
                    }
                    Err(message) => {
                        if i + 1 == count {
                            // A torn append at the tail: the batch was never
                            // published, and its position was never used.
                            tracing::warn!(segment = %path.display(), offset, %message,
                                "truncating a torn frame at the end of the spool");
                            drop(reader);
                            file.set_len(offset)
                                .map_err(io_err(&path, "truncating a torn frame"))?;
                            file.sync_all()
                                .map_err(io_err(&path, "syncing a segment"))?;
                            recovery.truncated_bytes = size - offset;
                            break;
                        }
                        return Err(AgentError::Spool {
                            path,
                            message: format!("corrupt frame at offset {offset}: {message}"),
                        });
                    }
                }
            }
            segments.push(Segment {
                first_seq,
                last_seq,
                path,
                bytes: offset,
            });
        }
        recovery.positions = positions.clone();
        recovery.oldest_pending_age = segments
            .iter()
            .find(|s| s.last_seq > checkpoint.acked)
            .and_then(|s| fs::metadata(&s.path).ok()?.modified().ok()?.elapsed().ok());
        let inner = Inner {
            next_seq: max_seq + 1,
            acked: checkpoint.acked,
            acked_out_of_order: BTreeSet::new(),
            unacked_bytes: recovery.pending_bytes,
            pending,
            positions,
            acked_positions: checkpoint.positions,
            persisted_acked: checkpoint.acked,
            segments,
            closed: false,
        };
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                options,
                inner: Mutex::new(inner),
                writer: Mutex::new(None),
                synced: Mutex::new(max_seq),
                space: Condvar::new(),
                appended: tokio::sync::Notify::new(),
                gauges: std::sync::OnceLock::new(),
            },
            recovery,
        ))
    }

    /// Keeps the spool depth gauges of `metrics` current on every append and ack.
    pub fn report_depth_to(&self, metrics: std::sync::Arc<crate::metrics::Metrics>) {
        let inner = self.lock();
        metrics.spool_batches.store(
            inner.pending.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        metrics
            .spool_bytes
            .store(inner.unacked_bytes, std::sync::atomic::Ordering::Relaxed);
        drop(inner);
        let _ = self.gauges.set(metrics);
    }

    fn publish_depth(&self, inner: &Inner) {
        if let Some(m) = self.gauges.get() {
            m.spool_batches.store(
                inner.pending.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            m.spool_bytes
                .store(inner.unacked_bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a record, blocking while the spool is full. Returns its seq,
    /// or `None` when the spool was closed while waiting (nothing written).
    ///
    /// The write and fsync happen outside the metadata lock, so the publisher
    /// keeps reading and acknowledging meanwhile; appends are serialized by
    /// the writer lock, so seqs are written in order.
    pub fn append(&self, mut record: SpoolRecord) -> Result<Option<u64>, AgentError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let estimate = (FRAME_HEADER as u64)
            + record
                .messages
                .iter()
                .map(|m| m.payload.len() as u64 + 512)
                .sum::<u64>();
        let (seq, roll, active) = {
            let mut inner = self.lock();
            while !inner.closed
                && inner.unacked_bytes > 0
                && inner.unacked_bytes + estimate > self.options.max_bytes
            {
                inner = self
                    .space
                    .wait_timeout(inner, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if inner.closed {
                return Ok(None);
            }
            let roll = match inner.segments.last() {
                None => true,
                Some(s) => s.bytes >= self.options.segment_bytes,
            };
            let seq = inner.next_seq;
            if roll {
                inner.segments.push(Segment {
                    first_seq: seq,
                    last_seq: seq - 1,
                    path: self.dir.join(segment_name(seq)),
                    bytes: 0,
                });
            }
            let active = inner.segments.last().expect("segment").path.clone();
            (seq, roll, active)
        };
        record.seq = seq;
        let body = rmp_serde::to_vec_named(&record).map_err(|e| AgentError::Spool {
            path: self.dir.clone(),
            message: format!("encoding a record: {e}"),
        })?;
        let frame = encode_frame(seq, &body);
        drop(body);
        let frame_len = frame.len() as u64;
        if roll && self.options.sync == SpoolSync::Group {
            // Group commit syncs only the active segment: finish the old one.
            if let Some(old) = writer.as_ref() {
                old.sync_data()
                    .map_err(io_err(&active, "syncing the previous segment"))?;
            }
        }
        if roll || writer.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&active)
                .map_err(io_err(&active, "opening a segment"))?;
            if roll && self.options.sync != SpoolSync::Off {
                sync_dir(&self.dir);
            }
            *writer = Some(file);
        }
        let file = writer.as_mut().expect("writer");
        file.write_all(&frame)
            .map_err(io_err(&active, "appending to the spool"))?;
        if self.options.sync == SpoolSync::EveryBatch {
            file.sync_data()
                .map_err(io_err(&active, "syncing the spool"))?;
        }
        let mut inner = self.lock();
        let segment = inner.segments.last_mut().expect("segment");
        segment.bytes += frame_len;
        segment.last_seq = seq;
        inner.next_seq = seq + 1;
        inner.unacked_bytes += frame_len;
        inner
            .positions
            .insert(record.source.clone(), record.position.clone());
        inner.pending.insert(
            seq,
            Pending {
                bytes: frame_len,
                source: record.source,
                position: record.position,
            },
        );
        self.publish_depth(&inner);
        drop(inner);
        drop(writer);
        // Group commit: the first appender to sync covers every record
        // written so far; appends meanwhile join the next group. The
        // publisher reads only synced records.
        self.sync_through(seq)?;
        self.appended.notify_one();
        Ok(Some(seq))
    }

    /// Group commit: makes every record up to at least `seq` durable with one
    /// fsync covering everything written so far. A no-op unless the policy
    /// is [`SpoolSync::Group`] or when an earlier call already covered `seq`.
    pub fn sync_through(&self, seq: u64) -> Result<(), AgentError> {
        if self.options.sync != SpoolSync::Group {
            return Ok(());
        }
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= seq {
            return Ok(());
        }
        // Appends hold the writer lock while writing: once it is ours, every
        // seq below next_seq is written. Sync a clone outside the lock so
        // appends go on meanwhile (they join the next group).
        let (file, through) = {
            let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let through = self.lock().next_seq - 1;
            match writer.as_ref() {
                Some(f) => (
                    f.try_clone()
                        .map_err(io_err(&self.dir, "cloning the segment handle"))?,
                    through,
                ),
                None => {
                    *synced = through;
                    return Ok(());
                }
            }
        };
        file.sync_data()
            .map_err(io_err(&self.dir, "syncing the spool"))?;
        *synced = (*synced).max(through);
        Ok(())
    }

    /// Waits until a record is appended (or [`Spool::close`] is called).
    pub async fn wait_appended(&self) {
        self.appended.notified().await
    }

    /// Marks `seq` acknowledged; advances the acknowledged head over contiguous seqs.
    /// Returns `false` when it was acknowledged before.
    pub fn ack(&self, seq: u64) -> bool {
        let mut inner = self.lock();
        if seq <= inner.acked || !inner.acked_out_of_order.insert(seq) {
            return false;
        }
        loop {
            let next = inner.acked + 1;
            if !inner.acked_out_of_order.remove(&next) {
                break;
            }
            inner.acked = next;
            if let Some(p) = inner.pending.remove(&next) {
                inner.unacked_bytes -= p.bytes;
                inner.acked_positions.insert(p.source, p.position);
            }
        }
        self.publish_depth(&inner);
        drop(inner);
        self.space.notify_all();
        true
    }

    /// Persists the acknowledged head (if it moved) and deletes fully acknowledged segments.
    pub fn checkpoint(&self) -> Result<(), AgentError> {
        let (acked, positions) = {
            let inner = self.lock();
            if inner.acked == inner.persisted_acked {
                return Ok(());
            }
            (inner.acked, inner.acked_positions.clone())
        };
        let checkpoint = Checkpoint { acked, positions };
        let bytes = rmp_serde::to_vec_named(&checkpoint).map_err(|e| AgentError::Spool {
            path: self.dir.clone(),
            message: format!("encoding the checkpoint: {e}"),
        })?;
        let tmp = self.dir.join("checkpoint.tmp");
        let path = self.dir.join("checkpoint");
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp, "writing the checkpoint"))?;
            f.write_all(&bytes)
                .map_err(io_err(&tmp, "writing the checkpoint"))?;
            if self.options.sync != SpoolSync::Off {
                f.sync_all()
                    .map_err(io_err(&tmp, "syncing the checkpoint"))?;
            }
        }
        fs::rename(&tmp, &path).map_err(io_err(&path, "replacing the checkpoint"))?;
        if self.options.sync != SpoolSync::Off {
            sync_dir(&self.dir);
        }
        let mut inner = self.lock();
        inner.persisted_acked = inner.persisted_acked.max(acked);
        // Delete segments entirely at or below the persisted head, never the active one.
        while inner.segments.len() > 1 && inner.segments[0].last_seq <= inner.persisted_acked {
            let segment = inner.segments.remove(0);
            if let Err(e) = fs::remove_file(&segment.path) {
                tracing::warn!(segment = %segment.path.display(), error = %e,
                    "cannot delete an acknowledged spool segment");
            }
        }
        Ok(())
    }

    /// Unblocks waiting appends (they return `None`) and the publisher's wait.
    pub fn close(&self) {
        self.lock().closed = true;
        self.space.notify_all();
        self.appended.notify_one();
    }

    /// Seq of the first unacknowledged record.
    pub fn first_unacked(&self) -> u64 {
        self.lock().acked + 1
    }

    /// The next seq to be appended.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// The last seq the publisher may read: with group commit, the last
    /// synced one; otherwise the last appended one.
    pub fn readable_through(&self) -> u64 {
        let appended = self.next_seq() - 1;
        if self.options.sync == SpoolSync::Group {
            (*self.synced.lock().unwrap_or_else(|e| e.into_inner())).min(appended)
        } else {
            appended
        }
    }

    /// Unacknowledged batches and bytes.
    pub fn depth(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.pending.len() as u64, inner.unacked_bytes)
    }

    /// Each source's position after its last spooled batch.
    pub fn positions(&self) -> HashMap<String, Position> {
        self.lock().positions.clone()
    }

    /// A reader positioned at `seq`.
    pub fn reader(&self, seq: u64) -> SpoolReader<'_> {
        SpoolReader {
            spool: self,
            next: seq,
            file: None,
        }
    }

    fn segment_for(&self, seq: u64) -> Option<(PathBuf, u64)> {
        let inner = self.lock();
        inner
            .segments
            .iter()
            .rev()
            .find(|s| s.first_seq <= seq)
            .map(|s| (s.path.clone(), s.first_seq))
    }
}

/// Reads spooled records in seq order (the publisher's cursor).
pub struct SpoolReader<'a> {
    spool: &'a Spool,
    next: u64,
    file: Option<(File, u64, PathBuf)>,
}

impl SpoolReader<'_> {
    /// The seq the next [`SpoolReader::next_record`] returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Moves the cursor to `seq`.
    pub fn seek(&mut self, seq: u64) {
        self.next = seq;
        self.file = None;
    }

    /// The next record, or `None` when it is not appended yet.
    pub fn next_record(&mut self) -> Result<Option<SpoolRecord>, AgentError> {
        if self.next > self.spool.readable_through() {
            return Ok(None);
        }
        for _ in 0..3 {
            if self.file.is_none() {
                let Some((path, _)) = self.spool.segment_for(self.next) else {
                    return Err(AgentError::Spool {
                        path: self.spool.dir.clone(),
                        message: format!("no segment holds seq {}", self.next),
                    });
                };
                let file = File::open(&path).map_err(io_err(&path, "opening a segment"))?;
                self.file = Some((file, 0, path));
            }
            let (file, offset, path) = self.file.as_mut().expect("file");
            let size = file
                .metadata()
                .map_err(io_err(path, "reading segment size"))?
                .len();
            loop {
                if *offset >= size {
                    // The record is in a later segment.
                    self.file = None;
                    break;
                }
                file.seek(SeekFrom::Start(*offset))
                    .map_err(io_err(path, "seeking a segment"))?;
                let (seq, body) = match read_frame(file, size - *offset) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        self.file = None;
                        break;
                    }
                    Err(message) => {
                        return Err(AgentError::Spool {
                            path: path.clone(),
                            message: format!("corrupt frame at offset {offset}: {message}"),
                        })
                    }
                };
                *offset += (FRAME_HEADER + body.len()) as u64;
                if seq < self.next {
                    continue;
                }
                if seq > self.next {
                    return Err(AgentError::Spool {
                        path: path.clone(),
                        message: format!("expected seq {} but found {seq}", self.next),
                    });
                }
                let record: SpoolRecord =
                    rmp_serde::from_slice(&body).map_err(|e| AgentError::Spool {
                        path: path.clone(),
                        message: format!("undecodable record seq {seq}: {e}"),
                    })?;
                self.next += 1;
                return Ok(Some(record));
            }
        }
        Err(AgentError::Spool {
            path: self.spool.dir.clone(),
            message: format!("seq {} not found in the segments", self.next),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SpoolOptions {
        SpoolOptions {
            max_bytes: 1 << 20,
            segment_bytes: 2000,
            sync: SpoolSync::Off,
        }
    }

    fn record(source: &str, first: u64, size: usize) -> SpoolRecord {
        SpoolRecord {
            seq: 0,
            source: source.into(),
            subject: format!("lcls.mfx.e.1.{source}"),
            batch_id: format!("e/{source}/r1/{first}-{}", first + 1),
            first,
            last: first + 1,
            events: 2,
            raw_size: size as u64,
            wire_size: size as u64,
            position: Position {
                file: Some("f.h5".into()),
                file_event: first + 2,
                next_index: first + 2,
            },
            messages: vec![SpoolMessage {
                headers: vec![("Nats-Msg-Id".into(), format!("id-{first}"))],
                payload: vec![first as u8; size],
            }],
        }
    }

    #[test]
    fn every_sync_policy_reads_back_across_segments_and_reopens() {
        for sync in [SpoolSync::EveryBatch, SpoolSync::Group, SpoolSync::Off] {
            let dir = tempfile::tempdir().unwrap();
            let options = SpoolOptions { sync, ..options() };
            let (spool, _) = Spool::open(dir.path(), options.clone()).unwrap();
            // Appends from two threads at once (two sources): group commit
            // lets each through only once a sync covers it.
            std::thread::scope(|scope| {
                for source in ["a", "b"] {
                    let spool = &spool;
                    scope.spawn(move || {
                        for i in 0..8 {
                            spool.append(record(source, i * 2, 700)).unwrap();
                        }
                    });
                }
            });
            assert_eq!(spool.readable_through(), 16, "{sync:?}");
            let mut reader = spool.reader(1);
            let mut seqs = Vec::new();
            while let Some(r) = reader.next_record().unwrap() {
                seqs.push(r.seq);
            }
            assert_eq!(seqs, (1..=16).collect::<Vec<_>>(), "{sync:?}");
            spool.ack(1);
            spool.checkpoint().unwrap();
            drop(spool);
            let (reopened, rec) = Spool::open(dir.path(), options).unwrap();
            assert_eq!(rec.pending_batches, 15, "{sync:?}");
            assert_eq!(reopened.readable_through(), 16, "{sync:?}");
        }
    }

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, rec) = Spool::open(dir.path(), options()).unwrap();
        assert_eq!(rec.pending_batches, 0);
        for i in 0..10 {
            assert_eq!(spool.append(record("a", i * 2, 500)).unwrap(), Some(i + 1));
        }
        let mut reader = spool.reader(1);
        for i in 0..10 {
            let r = reader.next_record().unwrap().unwrap();
            assert_eq!(r.seq, i + 1);
            assert_eq!(r.first, i * 2);
            assert_eq!(r.messages[0].payload.len(), 500);
        }
        assert!(reader.next_record().unwrap().is_none());
        // Out-of-order acks advance the head only over contiguous seqs.
        spool.ack(2);
        spool.ack(1);
        spool.ack(4);
        assert_eq!(spool.first_unacked(), 3);
        spool.checkpoint().unwrap();
        drop(spool);
        let (spool, rec) = Spool::open(dir.path(), options()).unwrap();
        assert_eq!(
            rec.pending_batches, 8,
            "4 was acked out of order, not persisted"
        );
        assert_eq!(rec.positions["a"].next_index, 20);
        assert_eq!(spool.first_unacked(), 3);
        assert_eq!(spool.next_seq(), 11);
        let mut reader = spool.reader(spool.first_unacked());
        assert_eq!(reader.next_record().unwrap().unwrap().first, 4);
    }

    #[test]
    fn crash_without_checkpoint_replays_everything_unpersisted() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), options()).unwrap();
        for i in 0..6 {
            spool.append(record("a", i * 2, 300)).unwrap();
        }
        spool.ack(1);
        spool.ack(2);
        spool.checkpoint().unwrap();
        spool.ack(3);
        // Simulated crash: state dropped, the ack of 3 never persisted.
        drop(spool);
        let (spool, rec) = Spool::open(dir.path(), options()).unwrap();
        assert_eq!(rec.pending_batches, 4);
        let mut reader = spool.reader(spool.first_unacked());
        let seqs: Vec<u64> = std::iter::from_fn(|| reader.next_record().unwrap())
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, vec![3, 4, 5, 6]);
        // New appends continue the sequence.
        assert_eq!(spool.append(record("a", 12, 10)).unwrap(), Some(7));
    }

    #[test]
    fn torn_tail_is_truncated_and_positions_come_from_the_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), options()).unwrap();
        spool.append(record("a", 0, 100)).unwrap();
        spool.append(record("b", 0, 100)).unwrap();
        drop(spool);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let last = names.last().unwrap();
        // Half a frame: a crash in the middle of an append.
        let torn = encode_frame(3, &rmp_serde::to_vec_named(&record("a", 2, 100)).unwrap());
        let mut f = OpenOptions::new().append(true).open(last).unwrap();
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);
        let (spool, rec) = Spool::open(dir.path(), options()).unwrap();
        assert!(rec.truncated_bytes > 0);
        assert_eq!(rec.pending_batches, 2);
        assert_eq!(rec.positions["a"].next_index, 2);
        assert_eq!(spool.append(record("a", 2, 100)).unwrap(), Some(3));
        drop(spool);
        let (_, rec) = Spool::open(dir.path(), options()).unwrap();
        assert_eq!(rec.pending_batches, 3);
        assert_eq!(rec.truncated_bytes, 0);
    }

    #[test]
    fn acknowledged_segments_are_deleted_and_positions_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), options()).unwrap();
        for i in 0..20 {
            spool.append(record("a", i * 2, 400)).unwrap();
        }
        let segments = || {
            fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("seg-")
                })
                .count()
        };
        let before = segments();
        assert!(before > 3, "{before} segments");
        for seq in 1..=20 {
            spool.ack(seq);
        }
        spool.checkpoint().unwrap();
        assert_eq!(segments(), 1, "only the active segment is kept");
        drop(spool);
        let (spool, rec) = Spool::open(dir.path(), options()).unwrap();
        assert_eq!(rec.pending_batches, 0);
        assert_eq!(rec.positions["a"].next_index, 40);
        assert_eq!(spool.next_seq(), 21);
    }

    #[test]
    fn a_full_spool_blocks_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let small = SpoolOptions {
            max_bytes: 3000,
            ..options()
        };
        let (spool, _) = Spool::open(dir.path(), small).unwrap();
        let spool = std::sync::Arc::new(spool);
        spool.append(record("a", 0, 1000)).unwrap();
        spool.append(record("a", 2, 1000)).unwrap();
        let s2 = spool.clone();
        let blocked = std::thread::spawn(move || s2.append(record("a", 4, 1000)).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(spool.next_seq(), 3, "third append waits for space");
        spool.ack(1);
        assert_eq!(blocked.join().unwrap(), Some(3));
        // Closing releases a waiting append without writing.
        let s3 = spool.clone();
        let waiting = std::thread::spawn(move || s3.append(record("a", 6, 2500)).unwrap());
        std::thread::sleep(Duration::from_millis(200));
        spool.close();
        assert_eq!(waiting.join().unwrap(), None);
        assert_eq!(spool.next_seq(), 4);
    }
}
