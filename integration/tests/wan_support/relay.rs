//! A TCP relay that adds one-way delay with jitter: the kernel here has no
//! `netem`, so the delay of a long-distance link is emulated in user space.
//!
//! Each direction of each connection reads chunks, stamps each with the time
//! it may leave (now + delay + jitter, never earlier than the chunk before it,
//! so bytes stay in order) and writes it at that time. At most
//! `window_bytes` per direction are held, so a fast sender is slowed by the
//! relay as by a full pipe. The relay can be cut (open connections closed,
//! new ones refused) and restored.
//!
//! What it does not emulate: TCP on either side of the relay sees the short
//! veth round trip, not the long one, so congestion control and loss
//! recovery react faster than across a real ocean. Round trips of the NATS
//! protocols (pull requests, acks, flow control of sources and mirrors) do
//! see the full delay.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Delay of a link, each direction.
#[derive(Debug, Clone, Copy)]
pub struct Delay {
    /// Mean one-way delay.
    pub one_way: Duration,
    /// Each chunk's delay varies uniformly within `one_way ± jitter`.
    pub jitter: Duration,
    /// Bytes held per direction before the relay stops reading.
    pub window_bytes: usize,
}

impl Delay {
    /// A transcontinental link: 70 ms each way, ±5 ms jitter.
    pub fn transcontinental() -> Delay {
        Delay {
            one_way: Duration::from_millis(70),
            jitter: Duration::from_millis(5),
            window_bytes: 4 << 20,
        }
    }

    /// No added delay (a relay that only forwards).
    pub fn none() -> Delay {
        Delay {
            one_way: Duration::ZERO,
            jitter: Duration::ZERO,
            window_bytes: 4 << 20,
        }
    }

    fn sample(&self, state: &mut u64) -> Duration {
        if self.jitter.is_zero() {
            return self.one_way;
        }
        // xorshift64: enough for jitter, no dependency.
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let unit = (*state >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        let offset = self.jitter.as_secs_f64() * (2.0 * unit - 1.0);
        Duration::from_secs_f64((self.one_way.as_secs_f64() + offset).max(0.0))
    }
}

struct Shared {
    target: SocketAddr,
    delay: Delay,
    cut: AtomicBool,
    connections: Mutex<Vec<JoinHandle<()>>>,
    forwarded: [AtomicU64; 2],
    accepted: AtomicU64,
}

/// A listening relay towards one target address.
pub struct DelayRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl DelayRelay {
    /// Listens on `listen` (a free port) and relays every connection to `target` with `delay`.
    pub async fn start(
        listen: IpAddr,
        target: SocketAddr,
        delay: Delay,
    ) -> std::io::Result<DelayRelay> {
        let listener = TcpListener::bind(SocketAddr::new(listen, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            delay,
            cut: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
            accepted: AtomicU64::new(0),
        });
        let state = shared.clone();
        let accept = tokio::spawn(async move {
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            while let Ok((inbound, _)) = listener.accept().await {
                if state.cut.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                state.accepted.fetch_add(1, Ordering::Relaxed);
                seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let handle = tokio::spawn(relay_connection(inbound, state.clone(), seed));
                let mut connections = state.connections.lock().unwrap();
                connections.retain(|h| !h.is_finished());
                connections.push(handle);
            }
        });
        Ok(DelayRelay {
            addr,
            shared,
            accept,
        })
    }

    /// Address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `scheme://addr`, e.g. `nats://198.18.0.1:40000`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// Closes every open connection and refuses new ones until [`DelayRelay::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for handle in self.shared.connections.lock().unwrap().drain(..) {
            handle.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Bytes delivered (client to target, target to client).
    pub fn forwarded(&self) -> (u64, u64) {
        (
            self.shared.forwarded[0].load(Ordering::Relaxed),
            self.shared.forwarded[1].load(Ordering::Relaxed),
        )
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.accept.abort();
        for handle in self.shared.connections.lock().unwrap().drain(..) {
            handle.abort();
        }
    }
}

async fn relay_connection(inbound: TcpStream, shared: Arc<Shared>, seed: u64) {
    let Ok(Ok(outbound)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(shared.target)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    // Both directions in this one task: aborting it drops both sockets.
    tokio::join!(
        pump(in_read, out_write, &shared, 0, seed),
        pump(out_read, in_write, &shared, 1, seed ^ 0xdead_beef),
    );
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    direction: usize,
    seed: u64,
) {
    let delay = shared.delay;
    let window = Arc::new(Semaphore::new(delay.window_bytes));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = async move {
        let mut state = seed | 1;
        let mut last_due = Instant::now();
        loop {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = match from.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            chunk.truncate(n);
            let held = n.min(delay.window_bytes) as u32;
            let Ok(permit) = window.clone().acquire_many_owned(held).await else {
                break;
            };
            let due = (Instant::now() + delay.sample(&mut state)).max(last_due);
            last_due = due;
            if tx.send((due, chunk, permit)).is_err() {
                break;
            }
        }
        // Dropping `tx` lets the writer drain what is held, then half-close.
    };
    let writer = async move {
        while let Some((due, chunk, _permit)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            shared.forwarded[direction].fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
