//! lclstream's bitshuffle filter against the bitshuffle library itself (the
//! code HDF5 filter 32008 and Dectris bslz4 run, as built by PyPI
//! `hdf5plugin`), used without compression, on realistic and awkward arrays:
//! detector frames with read noise, photon counts, big-endian bytes, odd
//! element sizes, lengths that are not a multiple of 8, several blocks.
//!
//! Checks, per array: the library's bytes equal lclstream's bit for bit;
//! the library reads lclstream's bytes back to the original; lclstream and
//! the numpy decoder of docs/wire-format.md both invert the library's bytes.
//!
//! Needs `python3` with `numpy h5py hdf5plugin` (scripts/setup installs them).
//! Set `LCLSTREAM_SKIP_PYTHON=1` to skip on a machine without them.

use std::path::Path;

use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::bitshuffle;
use serde_json::{json, Value};

struct Case {
    name: &'static str,
    /// numpy dtype string; `V<n>` for opaque elements of n bytes.
    dtype: &'static str,
    shape: Vec<u64>,
    data: Vec<u8>,
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let realistic = DetectorModel {
        height: 96,
        width: 200,
        ..Default::default()
    };
    let counts = DetectorModel {
        height: 64,
        width: 128,
        ..DetectorModel::photon_counts()
    };
    let frame = |model: &DetectorModel| -> Vec<u8> {
        model
            .frame(7)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    };
    let big_endian: Vec<u8> = realistic
        .frame(8)
        .iter()
        .take(5003)
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let ints: Vec<u8> = (0..3001i32)
        .flat_map(|i| (i * 37 % 1000 - 500).to_le_bytes())
        .collect();
    let floats: Vec<u8> = (0..1029)
        .flat_map(|i| ((i as f64 * 0.1).sin() * 3.0).to_le_bytes())
        .collect();
    vec![
        Case {
            name: "frame_u2",
            dtype: "<u2",
            shape: vec![96, 200],
            data: frame(&realistic),
        },
        Case {
            name: "counts_u2",
            dtype: "<u2",
            shape: vec![64, 128],
            data: frame(&counts),
        },
        Case {
            name: "big_endian_u2",
            dtype: ">u2",
            shape: vec![5003],
            data: big_endian,
        },
        Case {
            name: "peaks_i4",
            dtype: "<i4",
            shape: vec![3001],
            data: ints,
        },
        Case {
            name: "wave_f8",
            dtype: "<f8",
            shape: vec![1029],
            data: floats,
        },
        Case {
            name: "mask_u1",
            dtype: "|u1",
            shape: vec![3, 8199],
            data: noise(3 * 8199, 1),
        },
        Case {
            name: "short_u2",
            dtype: "<u2",
            shape: vec![7],
            data: noise(14, 2),
        },
        Case {
            name: "odd_v3",
            dtype: "V3",
            shape: vec![2731],
            data: noise(3 * 2731, 3),
        },
        Case {
            name: "odd_v5",
            dtype: "V5",
            shape: vec![130],
            data: noise(5 * 130, 4),
        },
    ]
}

fn item_size(dtype: &str) -> usize {
    dtype
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .expect("dtype ends with its size")
}

#[test]
fn bitshuffle_matches_the_bitshuffle_library() {
    if std::env::var_os("LCLSTREAM_SKIP_PYTHON").is_some() {
        eprintln!("skipped: LCLSTREAM_SKIP_PYTHON is set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let mut manifest = Vec::new();
    for case in &cases {
        let size = item_size(case.dtype);
        assert_eq!(
            case.data.len() as u64,
            case.shape.iter().product::<u64>() * size as u64
        );
        let shuffled = bitshuffle::bitshuffle(&case.data, size).unwrap();
        std::fs::write(dir.path().join(format!("{}.in", case.name)), &case.data).unwrap();
        std::fs::write(dir.path().join(format!("{}.rust", case.name)), &shuffled).unwrap();
        manifest.push(json!({"name": case.name, "dtype": case.dtype, "shape": case.shape}));
    }
    std::fs::write(
        dir.path().join("cases.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let output = std::process::Command::new("python3")
        .current_dir(&script_dir)
        .arg("bitshuffle_interop.py")
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "python failed (install: pip install numpy h5py hdf5plugin):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    for case in &cases {
        let size = item_size(case.dtype);
        let lib = std::fs::read(dir.path().join(format!("{}.lib", case.name))).unwrap();
        let ours = bitshuffle::bitshuffle(&case.data, size).unwrap();
        assert!(
            lib == ours,
            "{}: the library's bytes differ from lclstream's",
            case.name
        );
        assert_eq!(
            bitshuffle::bitunshuffle(&lib, size).unwrap(),
            case.data,
            "{}: lclstream does not invert the library's bytes",
            case.name
        );
        assert_eq!(
            report[case.name],
            json!({"lib_decodes_rust": true, "numpy_decodes_lib": true}),
            "{}",
            case.name
        );
    }
}
