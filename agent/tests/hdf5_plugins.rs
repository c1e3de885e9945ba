//! Bitshuffle- and Blosc-compressed inputs (HDF5 filters 32008 and 32001)
//! are read through the HDF5 filter plugins of the Python package
//! `hdf5plugin`, found with `HDF5_PLUGIN_PATH` as docs/operators.md says.
//! One test in its own binary: the HDF5 library reads the variable once,
//! before its first plugin load.

use std::path::Path;
use std::process::Command;

use lclstream_agent::config::FieldMapping;
use lclstream_agent::hdf5_source::{Hdf5Reader, Layout};
use lclstream_nats::wire::DType;

#[test]
fn bitshuffle_and_blosc_inputs_read_through_hdf5plugin() {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h5py_inputs.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "writing the h5py files failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("expected.json")).unwrap()).unwrap();
    let plugins = expected["plugins_path"].as_str().unwrap_or_else(|| {
        panic!("the Python package hdf5plugin is not installed: run scripts/setup")
    });
    std::env::set_var("HDF5_PLUGIN_PATH", plugins);

    let layout = Layout {
        fields: ["bitshuffle", "blosc"]
            .iter()
            .map(|f| FieldMapping {
                dataset: format!("/{f}"),
                field: f.to_string(),
            })
            .collect(),
        time_dataset: None,
        discover: false,
    };
    let reader = Hdf5Reader::open(&dir.path().join("plugins.h5"), &layout).unwrap();
    let events = reader.read(0, reader.events(), 0).unwrap();
    assert_eq!(events.len(), 12);
    for field in ["bitshuffle", "blosc"] {
        let bytes: Vec<u8> = events
            .iter()
            .flat_map(|e| {
                assert_eq!(e.arrays[field].dtype, DType::U16);
                assert_eq!(e.arrays[field].shape, vec![16, 16]);
                e.arrays[field].data.clone()
            })
            .collect();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected["photons"].as_str().unwrap(), "{field}");
    }
}
