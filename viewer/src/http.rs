//! The viewer's HTTP server: a few routes over plain HTTP/1.1, every asset
//! compiled into the binary, live status pushed with server-sent events.
//!
//! Routes: `GET /` and `/app.js` (the page), `GET /api/events` (a status
//! snapshot every 300 ms as SSE), `GET /api/frame` (the latest preview:
//! u32 width, u32 height, then f32 values, little-endian), `GET
//! /api/frame.npy` (the full-resolution frame), `POST /api/control?...`
//! (`source`, `field`, `pause`, `roi`).
//!
//! Requests must name this server in `Host` (a loopback name or the bound
//! address), so that a web page elsewhere cannot reach it through DNS
//! rebinding. `POST /api/control` also needs the per-process token that
//! only the served page carries (header `X-Lclstream-Token`) and, when the
//! browser names one, this server as `Origin`: another web page open in the
//! same browser can neither read the token nor drive the viewer. Each SSE stream sends a fresh snapshot when the previous one
//! is written: a slow browser gets fewer updates, never a growing queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::state::ViewState;

const INDEX_HTML: &str = include_str!("assets/index.html");
/// Where the page template receives the control token.
const TOKEN_PLACEHOLDER: &str = "{{CONTROL_TOKEN}}";
/// Header carrying the control token.
const TOKEN_HEADER: &str = "x-lclstream-token";
const APP_JS: &str = include_str!("assets/app.js");
/// Largest request head accepted.
const MAX_REQUEST: usize = 16 * 1024;
/// Event streams (open tabs) served at once; more are refused.
const MAX_EVENT_STREAMS: usize = 16;
/// Concurrent connections served; more wait for a free slot.
const MAX_CONNECTIONS: usize = 32;

/// A running viewer; dropping it stops the server.
pub struct ViewerHandle {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ViewerHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for ViewerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the viewer on `bind`; `selection` receives the browser's choice of source.
pub async fn serve(
    bind: SocketAddr,
    state: Arc<ViewState>,
    selection: watch::Sender<String>,
) -> anyhow::Result<ViewerHandle> {
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding the viewer to {bind}"))?;
    let addr = listener.local_addr()?;
    let token = control_token().context("creating the viewer's control token")?;
    let shared = Arc::new(Shared {
        state,
        selection,
        addr,
        index_html: INDEX_HTML.replace(TOKEN_PLACEHOLDER, &token),
        token,
        event_streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("viewer: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &shared).await {
                    tracing::debug!("viewer connection: {e:#}");
                }
                drop(permit);
            });
        }
    });
    Ok(ViewerHandle { addr, task })
}

struct Shared {
    state: Arc<ViewState>,
    selection: watch::Sender<String>,
    addr: SocketAddr,
    /// Secret of this process, embedded in the page, required by control requests.
    token: String,
    index_html: String,
    /// Open event streams: each lasts as long as its tab, so they get fewer
    /// slots than connections and never starve the page's other requests.
    event_streams: Arc<Semaphore>,
}

/// 128 random bits from the kernel, hex-encoded.
fn control_token() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    host: Option<String>,
    origin: Option<String>,
    token: Option<String>,
}

async fn read_request(stream: &mut TcpStream) -> anyhow::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .context("request head timed out")??;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        anyhow::ensure!(buf.len() <= MAX_REQUEST, "request head too large");
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_string())
    };
    Ok(Some(Request {
        method,
        path: path.to_string(),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect(),
        host: header("host"),
        origin: header("origin"),
        token: header(TOKEN_HEADER),
    }))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `host` names this server: a loopback name, or the bound address.
fn host_allowed(host: Option<&str>, addr: SocketAddr) -> bool {
    let Some(host) = host else { return false };
    let name = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map(|(name, _)| name)
        .unwrap_or(host);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
        || name == addr.ip().to_string()
        || name == format!("[{}]", addr.ip())
}

/// Whether a control request comes from this server's own page: it carries
/// the token, and any `Origin` the browser sent names this server.
fn control_allowed(request: &Request, shared: &Shared) -> bool {
    let origin_ok = match request.origin.as_deref() {
        None => true,
        Some(origin) => origin
            .strip_prefix("http://")
            .is_some_and(|host| host_allowed(Some(host), shared.addr)),
    };
    let token_ok = request.token.as_deref().is_some_and(|t| {
        // Compare every byte so timing does not reveal a matching prefix.
        t.len() == shared.token.len()
            && t.bytes()
                .zip(shared.token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    origin_ok && token_ok
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    Ok(())
}

async fn handle(mut stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    let Some(request) = read_request(&mut stream).await? else {
        return Ok(());
    };
    if !host_allowed(request.host.as_deref(), shared.addr) {
        return respond(
            &mut stream,
            "403 Forbidden",
            "text/plain",
            "",
            b"unexpected Host header",
        )
        .await;
    }
    let state = &shared.state;
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/") => {
            respond(
                &mut stream,
                "200 OK",
                "text/html; charset=utf-8",
                "",
                shared.index_html.as_bytes(),
            )
            .await
        }
        ("GET", "/app.js") => {
            respond(
                &mut stream,
                "200 OK",
                "text/javascript; charset=utf-8",
                "",
                APP_JS.as_bytes(),
            )
            .await
        }
        ("GET", "/api/status") => {
            let body = serde_json::to_vec(&state.status())?;
            respond(&mut stream, "200 OK", "application/json", "", &body).await
        }
        ("GET", "/api/events") => {
            let Ok(_slot) = shared.event_streams.clone().try_acquire_owned() else {
                return respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    "Retry-After: 5\r\n",
                    b"too many viewer tabs open: close one",
                )
                .await;
            };
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                )
                .await?;
            loop {
                let json = serde_json::to_string(&state.status())?;
                stream
                    .write_all(format!("data: {json}\n\n").as_bytes())
                    .await?;
                stream.flush().await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        ("GET", "/api/frame") => match state.frame() {
            Some(frame) => {
                let mut body = Vec::with_capacity(8 + frame.preview.len() * 4);
                body.extend_from_slice(&(frame.width as u32).to_le_bytes());
                body.extend_from_slice(&(frame.height as u32).to_le_bytes());
                for v in &frame.preview {
                    body.extend_from_slice(&v.to_le_bytes());
                }
                let seq = format!("X-Frame-Seq: {}\r\n", frame.seq);
                respond(
                    &mut stream,
                    "200 OK",
                    "application/octet-stream",
                    &seq,
                    &body,
                )
                .await
            }
            None => {
                respond(
                    &mut stream,
                    "404 Not Found",
                    "text/plain",
                    "",
                    b"no frame yet",
                )
                .await
            }
        },
        ("GET", "/api/frame.npy") => match state.frame() {
            Some(frame) => {
                let Some(body) = crate::frame::to_npy(&frame.array) else {
                    return respond(
                        &mut stream,
                        "422 Unprocessable Entity",
                        "text/plain",
                        "",
                        b"the current frame's data is not a whole number of elements",
                    )
                    .await;
                };
                let name = format!(
                    "Content-Disposition: attachment; filename=\"frame-{}.npy\"\r\n",
                    frame.seq
                );
                respond(
                    &mut stream,
                    "200 OK",
                    "application/octet-stream",
                    &name,
                    &body,
                )
                .await
            }
            None => {
                respond(
                    &mut stream,
                    "404 Not Found",
                    "text/plain",
                    "",
                    b"no frame yet",
                )
                .await
            }
        },
        ("POST", "/api/control") => {
            if !control_allowed(&request, shared) {
                return respond(
                    &mut stream,
                    "403 Forbidden",
                    "text/plain",
                    "",
                    b"control requests need this viewer page's token and origin",
                )
                .await;
            }
            for (key, value) in &request.query {
                match key.as_str() {
                    "source" if !value.is_empty() => {
                        shared.selection.send_replace(value.clone());
                    }
                    "field" if !value.is_empty() => state.set_field(value),
                    "pause" => state.set_paused(value == "1" || value == "true"),
                    "roi" => {
                        let parts: Vec<usize> = value
                            .split(',')
                            .filter_map(|p| p.trim().parse().ok())
                            .collect();
                        if let [x0, y0, x1, y1] = parts[..] {
                            state.set_roi([x0, y0, x1, y1]);
                        }
                    }
                    _ => {}
                }
            }
            respond(&mut stream, "204 No Content", "text/plain", "", b"").await
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", "", b"not found").await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_servers_names_are_accepted_hosts() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(host_allowed(Some("127.0.0.1:8080"), addr));
        assert!(host_allowed(Some("localhost:8080"), addr));
        assert!(!host_allowed(Some("attacker.example:8080"), addr));
        assert!(!host_allowed(None, addr));
        assert_eq!(percent_decode("lcls.mfx.a%2Eb.%3E"), "lcls.mfx.a.b.>");
    }

    /// Sends one raw HTTP/1.1 request and returns the whole response.
    async fn raw(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn open_tabs_cannot_starve_the_page() {
        let state = Arc::new(ViewState::new("partner", "lcls.a.>", None));
        let (selection, _watched) = watch::channel("lcls.a.>".to_string());
        let server = serve("127.0.0.1:0".parse().unwrap(), state, selection)
            .await
            .unwrap();
        let addr = server.addr();
        let events = format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let mut open = Vec::new();
        for _ in 0..MAX_EVENT_STREAMS {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(events.as_bytes()).await.unwrap();
            let mut first = [0u8; 12];
            stream.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            open.push(stream);
        }
        let refused = raw(addr, &events).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        let page = raw(addr, &format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        // A closed tab frees its slot (once the server's next write fails).
        drop(open.pop());
        let mut again = String::new();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(events.as_bytes()).await.unwrap();
            let mut first = [0u8; 12];
            stream.read_exact(&mut first).await.unwrap();
            again = String::from_utf8_lossy(&first).into_owned();
            if again == "HTTP/1.1 200" {
                break;
            }
        }
        assert_eq!(again, "HTTP/1.1 200");
    }

    #[tokio::test]
    async fn control_needs_the_pages_token_origin_and_host() {
        let state = Arc::new(ViewState::new("partner", "lcls.a.>", None));
        let (selection, watched) = watch::channel("lcls.a.>".to_string());
        let server = serve("127.0.0.1:0".parse().unwrap(), state.clone(), selection)
            .await
            .unwrap();
        let addr = server.addr();
        let page = raw(addr, &format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(
            !page.contains(TOKEN_PLACEHOLDER),
            "the page must carry a real token"
        );
        let token = page
            .split("name=\"lclstream-token\" content=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_string();
        assert_eq!(token.len(), 32);
        let control = |headers: String| {
            format!("POST /api/control?source=lcls.b.%3E HTTP/1.1\r\n{headers}Content-Length: 0\r\n\r\n")
        };
        // A cross-site form post: no token, a foreign Origin.
        let forged = raw(
            addr,
            &control(format!(
                "Host: {addr}\r\nOrigin: http://attacker.example\r\n"
            )),
        )
        .await;
        assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
        // The token alone from another origin is refused too.
        let foreign = raw(
            addr,
            &control(format!(
                "Host: {addr}\r\nOrigin: http://attacker.example\r\nX-Lclstream-Token: {token}\r\n"
            )),
        )
        .await;
        assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
        // A wrong token of the right length.
        let wrong = raw(
            addr,
            &control(format!(
                "Host: {addr}\r\nX-Lclstream-Token: {}\r\n",
                "0".repeat(32)
            )),
        )
        .await;
        assert!(wrong.starts_with("HTTP/1.1 403"), "{wrong}");
        // DNS rebinding: the attacker's name in Host, even with a token.
        let rebound = raw(
            addr,
            &control(format!(
                "Host: attacker.example:{}\r\nX-Lclstream-Token: {token}\r\n",
                addr.port()
            )),
        )
        .await;
        assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
        let rebound_page = raw(
            addr,
            &format!(
                "GET / HTTP/1.1\r\nHost: attacker.example:{}\r\n\r\n",
                addr.port()
            ),
        )
        .await;
        assert!(rebound_page.starts_with("HTTP/1.1 403"), "{rebound_page}");
        assert!(!rebound_page.contains(&token));
        assert_eq!(
            *watched.borrow(),
            "lcls.a.>",
            "no refused request changed the source"
        );
        // The page's own request, as the browser sends it.
        let own = raw(
            addr,
            &control(format!(
                "Host: {addr}\r\nOrigin: http://{addr}\r\nX-Lclstream-Token: {token}\r\n"
            )),
        )
        .await;
        assert!(own.starts_with("HTTP/1.1 204"), "{own}");
        // The preflight a cross-site fetch with the header needs is never granted.
        let preflight = raw(
            addr,
            &format!(
                "OPTIONS /api/control HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://attacker.example\r\n\
                 Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x-lclstream-token\r\n\r\n"
            ),
        )
        .await;
        assert!(preflight.starts_with("HTTP/1.1 404"), "{preflight}");
        assert!(!preflight
            .to_ascii_lowercase()
            .contains("access-control-allow"));
        assert_eq!(*watched.borrow(), "lcls.b.>");
    }
}
