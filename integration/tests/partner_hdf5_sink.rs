//! `lclstream pull --hdf5` output, read back with h5py: zero-size arrays,
//! scalars in their wire type (text included), gzip compression, presence masks of fields
//! missing from some runs; a batch the file cannot take is a clear error that
//! hands the batch back instead of blocking the consumer or looking complete.

mod partner_support;

use std::process::Command;
use std::time::Duration;

use lclstream_nats::streams::StreamSettings;
use lclstream_nats::subjects::DataSubject;
use lclstream_nats::wire::{self, Array, Batch, EncodeOptions, Event, Scalar};
use lclstream_partner::hdf5_sink::Hdf5Sink;
use lclstream_partner::{DatasetRequest, PartnerError, PullOptions, Start};
use partner_support::*;

fn event(run: u32, index: u64, frame_side: u64) -> Event {
    let mut e = Event {
        index,
        time_ns: 1_000 + index,
        ..Default::default()
    };
    let s = &mut e.scalars;
    s.insert("hit".into(), Scalar::Bool(index.is_multiple_of(2)));
    s.insert("big".into(), Scalar::UInt(u64::MAX - index));
    s.insert("pulse".into(), Scalar::Int(index as i64 - 3));
    s.insert("energy".into(), Scalar::Float(9500.25 + index as f64));
    s.insert("pulse_mj".into(), Scalar::Float32(0.1 + index as f32));
    if run == 2 {
        s.insert("gas".into(), Scalar::Float(0.5));
        s.insert("note".into(), Scalar::Text(format!("réglage {index}")));
    }
    let pixels: Vec<u16> = (0..frame_side * frame_side)
        .map(|p| 1000 + ((p * 7 + index) % 13) as u16)
        .collect();
    e.arrays.insert(
        "frame".into(),
        Array::from_u16(vec![frame_side, frame_side], &pixels).unwrap(),
    );
    // No peaks found: a zero-size per-event array.
    e.arrays
        .insert("peaks".into(), Array::from_f32(vec![0, 3], &[]).unwrap());
    e
}

async fn publish_run(js: &async_nats::jetstream::Context, run: u32, events: u64, side: u64) {
    js.get_or_create_stream(StreamSettings::for_instrument("mfx").to_config())
        .await
        .expect("stream");
    let subject = DataSubject::new("mfx", "mfxp1234", run, "det").unwrap();
    let batch = Batch::new(
        "mfxp1234",
        run,
        "det",
        (0..events).map(|i| event(run, i, side)).collect(),
    )
    .unwrap();
    for message in wire::encode(batch, &EncodeOptions::default())
        .unwrap()
        .messages
    {
        js.publish_with_headers(subject.to_string(), message.headers, message.payload)
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

const READ_BACK: &str = r#"
import h5py, json, sys
f = h5py.File(sys.argv[1], "r")
g = f["mfxp1234/det"]
out = {}
for name, ds in list(g.items()) + [("present/" + k, v) for k, v in g["present"].items()]:
    if isinstance(ds, h5py.Dataset):
        out[name] = {"dtype": ds.dtype.str, "shape": list(ds.shape), "compression": ds.compression}
out["big"]["values"] = [str(v) for v in g["big"][()]]
out["hit"]["values"] = [bool(v) for v in g["hit"][()]]
out["present/gas"]["values"] = [bool(v) for v in g["present/gas"][()]]
out["gas"]["values"] = [float(v) for v in g["gas"][()]]
out["run"]["values"] = [int(v) for v in g["run"][()]]
out["note"]["values"] = [v.decode() for v in g["note"][()]]
print(json.dumps(out))
"#;

#[tokio::test]
async fn hdf5_output_keeps_types_compresses_masks_and_refuses_poison_clearly() {
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas())]).await;
    publish_run(&s.js, 1, 4, 8).await;
    publish_run(&s.js, 2, 3, 8).await;
    let path = s.dir.path().join("out.h5");
    let client = partner(&s.server.url(), "ucsd").await;
    let grant = step(
        "request",
        client.request_dataset(&DatasetRequest {
            filters: vec!["lcls.mfx.mfxp1234.>".into()],
            start: Start::All,
            end: None,
            label: Some("sink".into()),
        }),
    )
    .await
    .unwrap();
    let options = PullOptions {
        idle_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let mut sink = Hdf5Sink::open(&path).unwrap();
    let summary = step("pull", client.pull(&grant, &options, &mut sink))
        .await
        .unwrap();
    assert_eq!(summary.events, 7);
    drop(sink);

    let out = Command::new("python3")
        .args(["-c", READ_BACK])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "h5py reads the output: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dtype = |name: &str| v[name]["dtype"].as_str().unwrap().to_string();
    assert_eq!(dtype("hit"), "|b1", "booleans stay booleans");
    assert_eq!(dtype("big"), "<u8", "uint64 stays unsigned");
    assert_eq!(dtype("pulse"), "<i8");
    assert_eq!(dtype("energy"), "<f8");
    assert_eq!(dtype("pulse_mj"), "<f4", "float32 stays float32");
    assert_eq!(dtype("frame"), "<u2");
    assert_eq!(v["peaks"]["shape"], serde_json::json!([7, 0, 3]));
    assert_eq!(v["peaks"]["dtype"], "<f4");
    for name in ["frame", "energy", "index", "present/gas"] {
        assert_eq!(v[name]["compression"], "gzip", "{name} is compressed");
    }
    assert_eq!(v["big"]["values"][0], (u64::MAX).to_string());
    assert_eq!(
        v["hit"]["values"],
        serde_json::json!([true, false, true, false, true, false, true])
    );
    // Run 1 has no `gas`: the mask tells its zero-filled rows from real values.
    assert_eq!(v["run"]["values"], serde_json::json!([1, 1, 1, 1, 2, 2, 2]));
    assert_eq!(
        v["present/gas"]["values"],
        serde_json::json!([false, false, false, false, true, true, true])
    );
    assert_eq!(
        v["gas"]["values"],
        serde_json::json!([0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5])
    );
    assert_eq!(v["present/frame"]["shape"], serde_json::json!([7]));
    assert_eq!(v["note"]["dtype"], "|O", "text as variable-length strings");
    assert_eq!(
        v["note"]["values"],
        serde_json::json!(["", "", "", "", "réglage 0", "réglage 1", "réglage 2"])
    );

    // A batch the file cannot take (frames of another shape): a clear error,
    // the batch handed back, and a second pull fails the same way instead of
    // finding "0 pending" and looking complete.
    publish_run(&s.js, 3, 2, 5).await;
    for attempt in 0..2 {
        let mut sink = Hdf5Sink::open(&path).unwrap();
        let err = step("poison pull", client.pull(&grant, &options, &mut sink))
            .await
            .expect_err("the odd batch is refused");
        let text = err.to_string();
        assert!(matches!(err, PartnerError::Sink(_)), "{text}");
        assert!(
            text.contains("cannot be written")
                && text.contains("frame")
                && text.contains("handed back")
                && text.contains("lcls.mfx.mfxp1234.3.det"),
            "attempt {attempt}: {text}"
        );
    }
}
