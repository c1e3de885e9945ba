//! Fuzzes the bitshuffle filter: any bytes and element size give a result or
//! an error, never a panic, and a transform is always undone exactly.
//!
//! The first byte picks the element size (0 to 31, 0 must be refused).
#![no_main]

use lclstream_nats::wire::bitshuffle::{bitshuffle, bitunshuffle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let elem_size = (selector & 31) as usize;
    let whole = elem_size != 0 && bytes.len() % elem_size == 0;
    match (bitshuffle(bytes, elem_size), bitunshuffle(bytes, elem_size)) {
        (Ok(shuffled), Ok(unshuffled)) => {
            assert!(whole);
            assert_eq!(bitunshuffle(&shuffled, elem_size).unwrap(), bytes);
            assert_eq!(bitshuffle(&unshuffled, elem_size).unwrap(), bytes);
        }
        (Err(_), Err(_)) => assert!(!whole),
        _ => panic!("shuffle and unshuffle disagree on validity"),
    }
});
