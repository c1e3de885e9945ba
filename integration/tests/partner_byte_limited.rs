//! Pull requests bounded by bytes: with realistic frames (read noise, about
//! x4 compression) a request of `max_batch` messages can be larger than the
//! institution's `max_bytes`. nats-server then ends the request with "409
//! Message Size Exceeds MaxBytes" once the next message does not fit; the
//! partner must treat that as the end of one request, pull again, and end
//! with every event.

mod partner_support;

use std::time::Duration;

use partner_support::*;

#[tokio::test]
async fn requests_filled_by_bytes_deliver_every_event() {
    let mut quotas = quick_quotas();
    quotas.pull.max_batch = 64;
    quotas.pull.max_bytes = 96 * 1024;
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quotas)]).await;
    // 40 messages of 2 frames of 96 x 96 u16 with read noise: about 9 KiB each,
    // so 64 of them are several times the 96 KiB a request may carry.
    let messages = publish(&s.js, "mfxp1234", 4, 40, 2, 96).await;
    assert_eq!(messages, 40);
    let client = partner(&s.server.url(), "ucsd").await;
    let (summary, indices) = request_and_pull(
        &client,
        "lcls.mfx.mfxp1234.4.jungfrau",
        "bytes",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(indices, (0..80).collect::<Vec<u64>>());
    assert_eq!(summary.messages, 40);
    assert!(
        summary.bytes > 2 * 96 * 1024,
        "the data spans several byte-limited requests: {} bytes",
        summary.bytes
    );
}
