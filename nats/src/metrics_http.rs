//! The two halves of a Prometheus-style scrape endpoint that the agent and the
//! gateway share: reading a request's path and writing a plain-text answer.
//! Each process keeps its own routes; this module only speaks HTTP/1.0.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads the request head (it may arrive in pieces; at most 2 KiB, at most
/// 5 s) and returns the request path, empty when there is none.
pub async fn read_request_path(stream: &mut TcpStream) -> String {
    let mut request = [0u8; 2048];
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while n < request.len() && !request[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut request[n..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(read)) => n += read,
        }
    }
    let head = String::from_utf8_lossy(&request[..n]);
    head.split_whitespace().nth(1).unwrap_or("").to_string()
}

/// Writes `body` as a Prometheus text answer with `status` and closes.
pub async fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
