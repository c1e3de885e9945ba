//! Where a re-readable source resumes, from what JetStream already stores.
//!
//! With `spool.sync = off` the spool is not fsynced: a killed agent process
//! loses nothing (the kernel keeps what was written), but a crash of the
//! machine may lose the spool's tail or checkpoint. Files can be read again,
//! so the last batch stored on the source's subject says how far the source
//! got: batch ids are `<experiment>/<source>/r<run>/<first>-<last>` and
//! deterministic, so re-reading from there publishes nothing twice (and
//! JetStream drops repeated `Nats-Msg-Id`s within its duplicate window).

use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, ErrorCode};
use lclstream_nats::wire::batch_id;
use lclstream_nats::wire::chunk::parse_chunk_header;
use lclstream_nats::wire::headers as h;

use crate::spool::Position;
use crate::AgentError;

/// The last batch of a source stored in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredTail {
    /// First event index of the batch.
    pub first: u64,
    /// Last event index of the batch.
    pub last: u64,
    /// Every chunk of it is stored (false: the last stored message is a
    /// chunk before the final one).
    pub complete: bool,
}

impl StoredTail {
    /// The next event index to read: after the batch when it is complete,
    /// else its first event again (re-read into the same batch id, whose
    /// stored chunks are then dropped as duplicates).
    pub fn next_index(&self) -> u64 {
        if self.complete {
            self.last + 1
        } else {
            self.first
        }
    }
}

/// Parses a stored message's headers into the tail of batch ids starting
/// with `prefix` (`<experiment>/<source>/r<run>/`); `None` for a message of
/// another run or source, or without lclstream headers.
pub fn parse_tail(headers: &async_nats::HeaderMap, prefix: &str) -> Option<StoredTail> {
    let id = h::get(headers, h::BATCH_ID)?;
    let range = id.strip_prefix(prefix)?;
    let (first, last) = range.split_once('-')?;
    let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
    let complete = match h::get(headers, h::CHUNK) {
        None => true,
        Some(value) => {
            let (index, total) = parse_chunk_header(value).ok()?;
            index + 1 == total
        }
    };
    Some(StoredTail {
        first,
        last,
        complete,
    })
}

/// Reads the last batch stored on `subject` for this experiment, source and
/// run; retries while the broker is unreachable (a broker outage pauses the
/// agent, never ends it: the caller stops waiting on shutdown).
pub async fn stored_tail(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    (experiment, source, run): (&str, &str, u32),
) -> Result<Option<StoredTail>, AgentError> {
    // batch_id(..., 0, 0) ends in "0-0": keep everything before the range.
    let sample = batch_id(experiment, source, run, 0, 0);
    let prefix = &sample[..sample.len() - 3];
    let mut delay = Duration::from_millis(100);
    loop {
        let stream_handle = js.get_stream_no_info(stream).await;
        let result = match stream_handle {
            Ok(s) => s.get_last_raw_message_by_subject(subject).await,
            Err(e) => {
                return Err(AgentError::Nats(format!("stream {stream}: {e}")));
            }
        };
        let error = match result {
            Ok(message) => return Ok(parse_tail(&message.headers, prefix)),
            Err(e) => match e.kind() {
                LastRawMessageErrorKind::NoMessageFound => return Ok(None),
                LastRawMessageErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    return Ok(None)
                }
                _ => e.to_string(),
            },
        };
        tracing::warn!(%subject, %error, retry_in = ?delay, "cannot read the last stored batch");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The position to resume from: the spool's, unless JetStream stores more
/// (the spool lost its unsynced tail), then "skip to event `next_index`",
/// which the HDF5 reader resolves by counting events through the files.
pub fn merge(spool: Option<Position>, tail: Option<StoredTail>) -> Option<Position> {
    let Some(tail) = tail else { return spool };
    let next = tail.next_index();
    match spool {
        Some(p) if p.next_index >= next => Some(p),
        _ => Some(Position {
            file: None,
            file_event: 0,
            next_index: next,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, chunk: Option<&str>) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(h::BATCH_ID, id);
        if let Some(c) = chunk {
            headers.insert(h::CHUNK, c);
        }
        headers
    }

    #[test]
    fn tail_of_this_run_only() {
        let p = "exp/det/r7/";
        assert_eq!(
            parse_tail(&headers("exp/det/r7/64-127", None), p),
            Some(StoredTail {
                first: 64,
                last: 127,
                complete: true
            })
        );
        assert_eq!(parse_tail(&headers("exp/det/r8/64-127", None), p), None);
        assert_eq!(parse_tail(&headers("exp/det2/r7/64-127", None), p), None);
        assert_eq!(parse_tail(&async_nats::HeaderMap::new(), p), None);
    }

    #[test]
    fn an_unfinished_chunked_batch_is_read_again() {
        let p = "exp/det/r7/";
        let partial = parse_tail(&headers("exp/det/r7/64-127", Some("1/3")), p).unwrap();
        assert_eq!(partial.next_index(), 64);
        let done = parse_tail(&headers("exp/det/r7/64-127", Some("2/3")), p).unwrap();
        assert_eq!(done.next_index(), 128);
    }

    #[test]
    fn jetstream_wins_only_when_it_is_ahead() {
        let spool = Position {
            file: Some("a.h5".into()),
            file_event: 10,
            next_index: 10,
        };
        let behind = StoredTail {
            first: 0,
            last: 4,
            complete: true,
        };
        assert_eq!(
            merge(Some(spool.clone()), Some(behind)),
            Some(spool.clone())
        );
        let ahead = StoredTail {
            first: 10,
            last: 19,
            complete: true,
        };
        let merged = merge(Some(spool), Some(ahead)).unwrap();
        assert_eq!((merged.file, merged.next_index), (None, 20));
        assert_eq!(merge(None, None), None);
    }
}
