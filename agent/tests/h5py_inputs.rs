//! HDF5 inputs as h5py and LCLS smalldata_tools write them (files written by
//! `h5py_inputs.py` next to this file): LZF compression, fixed- and
//! variable-length strings, booleans, float16, uint64 above 2^63, big-endian
//! and empty arrays, and the smalldata_tools layout.

use std::path::Path;
use std::process::Command;

use lclstream_agent::config::{FieldMapping, Preset};
use lclstream_agent::hdf5_source::{Hdf5Reader, Layout};
use lclstream_nats::wire::{DType, Event, Scalar};

/// Writes the h5py files into `dir` and returns the expected values.
pub fn write_h5py_files(dir: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h5py_inputs.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "writing the h5py files failed (python3 needs numpy and h5py: run scripts/setup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap()
}

/// A float from Python's `float.hex()` (exact, unlike decimal JSON numbers).
fn float_hex(v: &serde_json::Value) -> f64 {
    let s = v.as_str().unwrap();
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let s = s.strip_prefix("0x").unwrap();
    let (mantissa, exp) = s.split_once('p').unwrap();
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut m = u64::from_str_radix(int, 16).unwrap() as f64;
    for (i, c) in frac.chars().enumerate() {
        m += c.to_digit(16).unwrap() as f64 / 16f64.powi(i as i32 + 1);
    }
    let v = m * 2f64.powi(exp.parse().unwrap());
    if neg {
        -v
    } else {
        v
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn layout(fields: &[&str]) -> Layout {
    Layout {
        fields: fields
            .iter()
            .map(|f| FieldMapping {
                dataset: format!("/{f}"),
                field: f.to_string(),
            })
            .collect(),
        time_dataset: None,
        discover: false,
    }
}

fn read_all(path: &Path, layout: &Layout) -> Vec<Event> {
    let reader = Hdf5Reader::open(path, layout).unwrap_or_else(|e| panic!("{e}"));
    // Uneven read chunks across the uneven storage chunks.
    let mut events = reader.read(0, 5, 0).unwrap();
    events.extend(reader.read(5, reader.events(), 5).unwrap());
    events
}

#[test]
fn h5py_types_and_lzf_are_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let expected = write_h5py_files(dir.path());
    let path = dir.path().join("types.h5");
    let fields = [
        "frames",
        "energy",
        "fixed",
        "fixed_utf8",
        "vlen",
        "vlen_ascii",
        "hit",
        "mask",
        "half",
        "half_scalar",
        "big",
        "small_u64",
        "empty",
        "be",
    ];
    let events = read_all(&path, &layout(&fields));
    assert_eq!(events.len(), 12);

    // LZF-compressed frames (h5py's filter), bit-exact.
    let frames: Vec<u8> = events
        .iter()
        .flat_map(|e| {
            let a = &e.arrays["frames"];
            assert_eq!((a.dtype, a.shape.clone()), (DType::U16, vec![5, 7]));
            a.data.clone()
        })
        .collect();
    assert_eq!(hex(&frames), expected["frames"].as_str().unwrap());
    for (e, want) in events.iter().zip(expected["energy"].as_array().unwrap()) {
        assert_eq!(e.scalars["energy"], Scalar::Float(float_hex(want)));
    }

    for (i, e) in events.iter().enumerate() {
        let s = &e.scalars;
        assert_eq!(s["fixed"], Scalar::Text(format!("shot{i}")));
        assert_eq!(s["fixed_utf8"], Scalar::Text(format!("é{i}")));
        assert_eq!(
            s["vlen"],
            Scalar::Text(format!("run note {}", "x".repeat(i)))
        );
        assert_eq!(s["vlen_ascii"], Scalar::Text(format!("a{i}")));
        assert_eq!(s["hit"], Scalar::Bool(i % 3 == 0));
        // uint64 keeps its exact value above i64::MAX.
        assert_eq!(s["big"], Scalar::UInt((1u64 << 63) + i as u64));
        assert_eq!(s["small_u64"], Scalar::Int(i as i64));
        // float16 scalars arrive as float32, exactly.
        assert_eq!(
            s["half_scalar"],
            Scalar::Float32(float_hex(&expected["half_scalar"][i]) as f32)
        );
        // float16 arrays arrive widened to float32, NaN kept.
        let a = &e.arrays["half"];
        assert_eq!((a.dtype, a.shape.clone()), (DType::F32, vec![4]));
        let got: Vec<f32> = a
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        for (g, w) in got.iter().zip(expected["half"][i].as_array().unwrap()) {
            match w.as_f64() {
                Some(w) => assert_eq!(*g as f64, w),
                None => assert!(g.is_nan()),
            }
        }
        // Empty per-event arrays keep their shape.
        let empty = &e.arrays["empty"];
        assert_eq!((empty.dtype, empty.shape.clone()), (DType::F32, vec![0]));
        assert!(empty.data.is_empty());
        // Big-endian integers arrive little-endian.
        assert_eq!(e.arrays["be"].dtype, DType::I32);
        assert_eq!(
            e.arrays["be"].data,
            [(2 * i) as i32, (2 * i + 1) as i32]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
        );
    }
    // Boolean arrays arrive as u8 0/1.
    let mask: Vec<u8> = events
        .iter()
        .flat_map(|e| {
            assert_eq!(e.arrays["mask"].dtype, DType::U8);
            assert_eq!(e.arrays["mask"].shape, vec![3, 4]);
            e.arrays["mask"].data.clone()
        })
        .collect();
    assert_eq!(hex(&mask), expected["mask"].as_str().unwrap());

    // String arrays (more than one string per event) are refused by name.
    let err = Hdf5Reader::open(&path, &layout(&["strings_2d"]))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("/strings_2d") && err.contains("string arrays are not supported"),
        "{err}"
    );
}

#[test]
fn smalldata_preset_reads_a_smalldata_tools_file() {
    let dir = tempfile::tempdir().unwrap();
    let expected = write_h5py_files(dir.path());
    let path = dir.path().join("smalldata.h5");
    let layout = Layout::preset(Preset::Smalldata);
    let reader = Hdf5Reader::open(&path, &layout).unwrap();
    let mut fields: Vec<String> = reader.fields().into_iter().map(|(_, f)| f).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "epix_alc1_ROI_0_com",
            "event_time",
            "fiducials",
            "gas_detector_f_11_ENRC",
            "gas_detector_f_22_ENRC",
            "ipm2_sum",
            "ipm2_xpos",
            "jungfrau1M_ROI_0_area",
            "jungfrau1M_ROI_0_sum",
            "lightStatus_laser",
            "lightStatus_xray",
            "timestamp",
        ],
        "per-event datasets only: not UserDataCfg or Sums"
    );
    let events = read_all(&path, &layout);
    assert_eq!(events.len(), 12);
    let mut roi = Vec::new();
    for (i, e) in events.iter().enumerate() {
        // psana2 timestamps: seconds since 1990 in the upper 32 bits.
        let sec = 1_100_000_000u64 + i as u64;
        assert_eq!(e.time_ns, (sec + 631_152_000) * 1_000_000_000 + 123);
        assert_eq!(
            e.scalars["timestamp"],
            Scalar::Int(((sec << 32) + 123) as i64)
        );
        assert_eq!(e.scalars["fiducials"], Scalar::Int(3 * i as i64));
        assert_eq!(
            e.scalars["lightStatus_xray"],
            Scalar::Int((i % 4 != 0) as i64)
        );
        assert_eq!(
            e.scalars["ipm2_sum"],
            Scalar::Float32(float_hex(&expected["ipm2_sum"][i]) as f32)
        );
        let a = &e.arrays["jungfrau1M_ROI_0_area"];
        assert_eq!((a.dtype, a.shape.clone()), (DType::F32, vec![6, 8]));
        roi.extend_from_slice(&a.data);
    }
    assert_eq!(hex(&roi), expected["roi"].as_str().unwrap());

    // Our own sample layout is not a smalldata_tools file.
    let sample = dir.path().join("sample.h5");
    lclstream_agent::sample::write_sample(
        &sample,
        &lclstream_agent::sample::SampleSpec::new(Preset::Sample, 3),
    )
    .unwrap();
    let err = Hdf5Reader::open(&sample, &layout)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("not a smalldata_tools file"), "{err}");
}

#[test]
fn a_plugin_filter_without_its_plugin_is_a_clear_error() {
    if std::env::var_os("HDF5_PLUGIN_PATH").is_some() {
        return; // plugins may be found: hdf5_plugins.rs covers that case
    }
    let dir = tempfile::tempdir().unwrap();
    let expected = write_h5py_files(dir.path());
    assert!(
        expected.get("photons").is_some(),
        "the Python package hdf5plugin is not installed: run scripts/setup"
    );
    let reader =
        Hdf5Reader::open(&dir.path().join("plugins.h5"), &layout(&["bitshuffle"])).unwrap();
    let err = reader.read(0, 4, 0).expect_err("no plugin").to_string();
    assert!(
        err.contains("plugins.h5")
            && err.contains("/bitshuffle")
            && err.contains("bitshuffle (32008)")
            && err.contains("HDF5_PLUGIN_PATH"),
        "{err}"
    );
}
