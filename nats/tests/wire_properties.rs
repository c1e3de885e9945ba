//! Property tests of wire format v1: round trips and hostile input.

use bytes::Bytes;
use lclstream_nats::wire::{
    self, bitshuffle, headers as h, Array, Batch, Compression, DType, DecodeLimits, EncodeOptions,
    Event, Filter, FilterPolicy, Reassembler, Scalar,
};
use proptest::prelude::*;

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![
        Just(DType::U8),
        Just(DType::I8),
        Just(DType::U16),
        Just(DType::I16),
        Just(DType::U32),
        Just(DType::I32),
        Just(DType::U64),
        Just(DType::I64),
        Just(DType::F32),
        Just(DType::F64),
    ]
}

fn array() -> impl Strategy<Value = Array> {
    (dtype(), prop::collection::vec(0u64..6, 0..4)).prop_flat_map(|(dtype, shape)| {
        let n = shape.iter().product::<u64>() as usize * dtype.size();
        prop::collection::vec(any::<u8>(), n..=n)
            .prop_map(move |data| Array::new(dtype, shape.clone(), data).expect("consistent"))
    })
}

fn scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        any::<bool>().prop_map(Scalar::Bool),
        any::<i64>().prop_map(Scalar::Int),
        any::<f64>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(Scalar::Float),
        ".{0,12}".prop_map(Scalar::Text),
    ]
}

fn batch() -> impl Strategy<Value = Batch> {
    let event = (
        any::<u64>(),
        prop::collection::btree_map("[a-z_]{1,8}", scalar(), 0..4),
        prop::collection::btree_map("[a-z_/]{1,8}", array(), 0..3),
    );
    (
        0u64..1_000_000,
        prop::collection::vec(event, 1..6),
        0u32..10_000,
        "[a-z0-9]{1,8}",
    )
        .prop_map(|(start, events, run, source)| {
            let events = events
                .into_iter()
                .enumerate()
                .map(|(i, (time_ns, scalars, arrays))| Event {
                    index: start + i as u64 * 3,
                    time_ns,
                    scalars,
                    arrays,
                })
                .collect();
            Batch::new("exp", run, source, events).expect("valid batch")
        })
}

fn filter() -> impl Strategy<Value = Filter> {
    prop_oneof![
        Just(Filter::None),
        Just(Filter::Shuffle),
        Just(Filter::Bitshuffle)
    ]
}

fn options() -> impl Strategy<Value = EncodeOptions> {
    (any::<bool>(), filter(), filter(), 2048usize..8192).prop_map(
        |(lz4, integers, floats, max_payload)| EncodeOptions {
            compression: if lz4 {
                Compression::Lz4
            } else {
                Compression::None
            },
            filters: FilterPolicy {
                integers,
                floats,
                ..FilterPolicy::none()
            },
            max_payload,
        },
    )
}

/// Encodes, then reassembles and decodes every message.
fn round_trip(batch: Batch, options: &EncodeOptions) -> Result<Batch, wire::WireError> {
    let encoded = wire::encode(batch, options)?;
    let mut reassembler = Reassembler::default();
    let mut whole = None;
    for message in encoded.messages {
        assert!(message.payload.len() <= options.max_payload);
        whole = reassembler.push(&message.headers, message.payload)?;
    }
    let whole = whole.expect("last chunk completes the batch");
    wire::decode(
        Some(&whole.headers),
        &whole.payload,
        &DecodeLimits::default(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn bitshuffle_round_trips_any_element_size(
        elem_size in 1usize..20,
        elements in 0usize..5000,
        seed in any::<u64>(),
    ) {
        let data: Vec<u8> = (0..elements * elem_size)
            .map(|i| (seed.wrapping_mul(i as u64 | 1) >> 29) as u8)
            .collect();
        let shuffled = bitshuffle::bitshuffle(&data, elem_size).unwrap();
        prop_assert_eq!(shuffled.len(), data.len());
        prop_assert_eq!(bitshuffle::bitunshuffle(&shuffled, elem_size).unwrap(), data);
    }

    #[test]
    fn bitshuffle_refuses_ragged_input(elem_size in 0usize..20, len in 0usize..300) {
        prop_assume!(elem_size == 0 || !len.is_multiple_of(elem_size));
        let data = vec![7u8; len];
        prop_assert!(bitshuffle::bitshuffle(&data, elem_size).is_err());
        prop_assert!(bitshuffle::bitunshuffle(&data, elem_size).is_err());
    }

    #[test]
    fn any_batch_round_trips(batch in batch(), options in options()) {
        prop_assert_eq!(round_trip(batch.clone(), &options).unwrap(), batch);
    }

    #[test]
    fn corrupting_a_payload_never_panics(batch in batch(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let encoded = wire::encode(batch.clone(), &EncodeOptions::default()).unwrap();
        let message = &encoded.messages[0];
        let mut corrupt = message.payload.to_vec();
        let i = at.index(corrupt.len());
        corrupt[i] ^= byte | 1;
        // With headers the checksum catches any change that still decompresses.
        let result = wire::decode(Some(&message.headers), &corrupt, &DecodeLimits::default());
        prop_assert!(result.is_err() || encoded.messages.len() > 1);
        // Without headers: an error or some valid batch, but never a panic.
        let _ = wire::decode(None, &corrupt, &DecodeLimits::default());
    }

    #[test]
    fn truncation_is_always_an_error(batch in batch(), cut in any::<prop::sample::Index>()) {
        let encoded = wire::encode(batch, &EncodeOptions::default()).unwrap();
        let message = &encoded.messages[0];
        prop_assume!(encoded.messages.len() == 1);
        let cut = cut.index(message.payload.len());
        prop_assert!(wire::decode(Some(&message.headers), &message.payload[..cut], &DecodeLimits::default()).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let limits = DecodeLimits { max_raw_bytes: 1 << 20, ..Default::default() };
        let _ = wire::decode(None, &bytes, &limits);
        let _ = wire::codec::decode_document(&bytes);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(h::CONTENT_ENCODING, h::ENCODING_IDENTITY);
        let _ = wire::decode(Some(&headers), &bytes, &limits);
        let _ = Reassembler::new(limits).push(&headers, Bytes::from(bytes));
    }
}
