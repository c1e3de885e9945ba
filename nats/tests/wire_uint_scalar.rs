//! Unsigned scalars above `i64::MAX` (HDF5 uint64 datasets) keep their exact
//! value through the wire format (smaller values stay `Int`), and 32-bit
//! floats stay 32-bit.

use lclstream_nats::wire::{self, Batch, DecodeLimits, EncodeOptions, Event, Scalar};

#[test]
fn uint64_above_i64_max_round_trips_exactly() {
    let events = (0..3u64)
        .map(|i| {
            let mut e = Event {
                index: i,
                ..Default::default()
            };
            e.scalars.insert("big".into(), Scalar::UInt(u64::MAX - i));
            e.scalars.insert("small".into(), Scalar::Int(i as i64));
            e.scalars.insert("x".into(), Scalar::Float(0.1));
            e.scalars.insert("y".into(), Scalar::Float32(0.1));
            e
        })
        .collect();
    let batch = Batch::new("e", 1, "s", events).unwrap();
    let options = EncodeOptions {
        max_payload: 1 << 20,
        ..Default::default()
    };
    let encoded = wire::encode(batch.clone(), &options).unwrap();
    assert_eq!(encoded.messages.len(), 1);
    let message = &encoded.messages[0];
    let decoded = wire::decode(
        Some(&message.headers),
        &message.payload,
        &DecodeLimits::default(),
    )
    .unwrap();
    assert_eq!(decoded, batch);
    assert_eq!(decoded.events[2].scalars["big"], Scalar::UInt(u64::MAX - 2));
    assert_eq!(decoded.events[1].scalars["small"], Scalar::Int(1));
    assert_eq!(decoded.events[0].scalars["x"], Scalar::Float(0.1));
    assert_eq!(decoded.events[0].scalars["y"], Scalar::Float32(0.1));
    // JSON (job requests, documents) reads small unsigned integers as Int.
    let scalar: Scalar = serde_json::from_str("7").unwrap();
    assert_eq!(scalar, Scalar::Int(7));
}
