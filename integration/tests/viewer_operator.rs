//! The viewer in operator mode (`lclstream view --stream`): facility
//! credentials, a consumer of the viewer's own on the stream, new events
//! only, and another consumer of the same stream loses nothing to it.

mod partner_support;

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use lclstream_nats::server::{http_get, NatsServer};
use lclstream_viewer::Viewer;
use partner_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The last complete status the page's event stream (SSE, never ending)
/// sent within a second.
async fn latest_status(addr: std::net::SocketAddr) -> Option<serde_json::Value> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut chunk = [0u8; 65536];
        while let Ok(n @ 1..) = stream.read(&mut chunk).await {
            received.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&received);
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|l| serde_json::from_str(l.trim()).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_views_a_stream_without_taking_events_from_other_consumers() {
    let server = NatsServer::start_default().expect("nats-server starts");
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    // Events stored before the viewer starts: a viewer shows only new ones.
    let before = publish(&js, "mfxp1234", 1, 2, 4, 64).await;
    let stream = js.get_stream("LCLS_MFX").await.unwrap();
    stream
        .create_consumer(pull::Config {
            durable_name: Some("analysis".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();

    let viewer = Viewer::start_operator(
        client.clone(),
        "LCLS_MFX",
        "127.0.0.1:0".parse().unwrap(),
        "lcls.mfx.>",
        None,
    )
    .await
    .expect("viewer starts");
    let addr = viewer.addr();
    // Its consumer exists before new events are published.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut names = stream.consumer_names();
        let mut found = false;
        while let Some(Ok(name)) = futures::StreamExt::next(&mut names).await {
            found |= name.starts_with("view-");
        }
        if found {
            break;
        }
        assert!(Instant::now() < deadline, "the viewer made no consumer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = publish(&js, "mfxp1234", 2, 3, 4, 64).await;

    // The page gets a frame and a count of exactly the new events.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = latest_status(addr).await;
        if let Some(status) = &status {
            if status["events"].as_u64() == Some(12) && status["frame_seq"].as_u64() > Some(0) {
                break status.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the viewer did not show the new events: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["mode"], "operator");
    assert_eq!(status["error"], serde_json::Value::Null);
    let (code, _) = tokio::task::spawn_blocking(move || {
        http_get(addr, "/api/frame.npy", Duration::from_secs(5))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(code, 200);

    // The other consumer still has every event, old and new.
    let mut analysis = stream
        .get_consumer::<pull::Config>("analysis")
        .await
        .unwrap();
    let info = analysis.info().await.unwrap();
    assert_eq!(info.num_pending as usize, before + after);
}
