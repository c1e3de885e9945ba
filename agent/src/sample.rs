//! Writing sample HDF5 runs in the layouts the agent's presets read.
//!
//! Frames come from [`DetectorModel`], so compression behaves as on real
//! detector data. Files are written a chunk of events at a time, so memory
//! does not grow with the number of events.

use std::path::Path;

use hdf5::File;
use lclstream_nats::synthetic::DetectorModel;
use ndarray::{s, Array1, Array2, Array3};

use crate::config::Preset;
use crate::AgentError;

/// Most peaks stored per event in the CXI peak tables.
pub const CXI_MAX_PEAKS: usize = 64;

/// First timestamp written into sample-layout files (ns since the epoch).
pub const SAMPLE_EPOCH_NS: u64 = 1_700_000_000_000_000_000;

/// Events written per HDF5 write call.
const WRITE_CHUNK: usize = 16;

/// What a sample file holds.
#[derive(Debug, Clone, Copy)]
pub struct SampleSpec {
    /// Layout.
    pub layout: Preset,
    /// Number of events.
    pub events: u64,
    /// Frame height.
    pub height: u64,
    /// Frame width.
    pub width: u64,
    /// Seed of the frames.
    pub seed: u64,
}

impl SampleSpec {
    /// A small sample of `events` events in `layout`.
    pub fn new(layout: Preset, events: u64) -> SampleSpec {
        SampleSpec {
            layout,
            events,
            height: 64,
            width: 64,
            seed: 1,
        }
    }
}

/// Writes a sample file at `path` (replaced if present).
pub fn write_sample(path: &Path, spec: &SampleSpec) -> Result<(), AgentError> {
    let err = |e: hdf5::Error| AgentError::Hdf5 {
        path: path.to_path_buf(),
        message: format!("writing sample: {e}"),
    };
    if spec.height == 0 || spec.width == 0 || spec.height * spec.width > 1 << 26 {
        return Err(AgentError::Hdf5 {
            path: path.to_path_buf(),
            message: "sample frames must have between 1 and 2^26 pixels".into(),
        });
    }
    let model = DetectorModel {
        height: spec.height,
        width: spec.width,
        seed: spec.seed,
        peaks: 8,
        ..Default::default()
    };
    if spec.layout == Preset::Smalldata {
        return Err(AgentError::Hdf5 {
            path: path.to_path_buf(),
            message: "samples are written in the `sample` and `cxi` layouts; the `smalldata` \
                      preset reads files written by LCLS smalldata_tools"
                .into(),
        });
    }
    let file = File::create(path).map_err(err)?;
    match spec.layout {
        Preset::Smalldata => {}
        Preset::Sample => write_jungfrau_layout(&file, &model, spec.events).map_err(err)?,
        Preset::Cxi => write_cxi(&file, &model, spec.events).map_err(err)?,
    }
    file.flush().map_err(err)?;
    file.close().map_err(err)?;
    Ok(())
}

fn chunks(n: u64) -> impl Iterator<Item = (usize, usize)> {
    (0..n as usize)
        .step_by(WRITE_CHUNK)
        .map(move |a| (a, (a + WRITE_CHUNK).min(n as usize)))
}

fn write_jungfrau_layout(file: &File, model: &DetectorModel, n: u64) -> hdf5::Result<()> {
    let (h, w) = (model.height as usize, model.width as usize);
    let nn = n as usize;
    let timestamps: Array1<u64> = (0..n).map(|i| SAMPLE_EPOCH_NS + i * 8_333_333).collect();
    let pulse_ids: Array1<u64> = (0..n).map(|i| 1000 + i * 3).collect();
    let energy: Array1<f64> = (0..n).map(|i| 9500.0 + (i % 17) as f64 * 0.25).collect();
    let pulse_energy: Array1<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.125).collect();
    file.new_dataset_builder()
        .with_data(&timestamps)
        .create("timestamp_ns")?;
    file.new_dataset_builder()
        .with_data(&pulse_ids)
        .create("pulse_id")?;
    file.new_dataset_builder()
        .with_data(&energy)
        .create("photon_energy_ev")?;
    file.new_dataset_builder()
        .with_data(&pulse_energy)
        .create("pulse_energy_mj")?;
    let group = file.create_group("jungfrau")?;
    let images = group
        .new_dataset::<u16>()
        .chunk((1, h, w))
        .shape((nn, h, w))
        .create("image")?;
    for (a, b) in chunks(n) {
        let mut block = Array3::<u16>::zeros((b - a, h, w));
        for (k, i) in (a..b).enumerate() {
            let frame = model.frame(i as u64);
            block
                .slice_mut(s![k, .., ..])
                .assign(&ndarray::ArrayView2::from_shape((h, w), &frame).expect("frame shape"));
        }
        images.write_slice(&block, s![a..b, .., ..])?;
    }
    Ok(())
}

/// The peaks of a CXI sample event: a deterministic table derived from the index.
fn peaks_of(
    index: u64,
) -> (
    i32,
    [f32; CXI_MAX_PEAKS],
    [f32; CXI_MAX_PEAKS],
    [f32; CXI_MAX_PEAKS],
) {
    let n = (index % 13) as usize + 1;
    let mut x = [0f32; CXI_MAX_PEAKS];
    let mut y = [0f32; CXI_MAX_PEAKS];
    let mut v = [0f32; CXI_MAX_PEAKS];
    for p in 0..n {
        x[p] = ((index * 7 + p as u64 * 13) % 64) as f32 + 0.5;
        y[p] = ((index * 5 + p as u64 * 11) % 64) as f32 + 0.25;
        v[p] = 100.0 * (p as f32 + 1.0) + index as f32;
    }
    (n as i32, x, y, v)
}

fn write_cxi(file: &File, model: &DetectorModel, n: u64) -> hdf5::Result<()> {
    let (h, w) = (model.height as usize, model.width as usize);
    let nn = n as usize;
    let data_group = file.create_group("entry_1")?.create_group("data_1")?;
    let data = data_group
        .new_dataset::<f32>()
        .chunk((1, h, w))
        .shape((nn, h, w))
        .create("data")?;
    for (a, b) in chunks(n) {
        let mut block = Array3::<f32>::zeros((b - a, h, w));
        for (k, i) in (a..b).enumerate() {
            let frame: Vec<f32> = model.frame(i as u64).iter().map(|&p| p as f32).collect();
            block
                .slice_mut(s![k, .., ..])
                .assign(&ndarray::ArrayView2::from_shape((h, w), &frame).expect("frame shape"));
        }
        data.write_slice(&block, s![a..b, .., ..])?;
    }
    let result = file.group("entry_1")?.create_group("result_1")?;
    let mut n_peaks = Array1::<i32>::zeros(nn);
    let mut xs = Array2::<f32>::zeros((nn, CXI_MAX_PEAKS));
    let mut ys = Array2::<f32>::zeros((nn, CXI_MAX_PEAKS));
    let mut vs = Array2::<f32>::zeros((nn, CXI_MAX_PEAKS));
    for i in 0..nn {
        let (count, x, y, v) = peaks_of(i as u64);
        n_peaks[i] = count;
        xs.row_mut(i).assign(&ndarray::ArrayView1::from(&x));
        ys.row_mut(i).assign(&ndarray::ArrayView1::from(&y));
        vs.row_mut(i).assign(&ndarray::ArrayView1::from(&v));
    }
    result
        .new_dataset_builder()
        .with_data(&n_peaks)
        .create("nPeaks")?;
    result
        .new_dataset_builder()
        .with_data(&xs)
        .create("peakXPosRaw")?;
    result
        .new_dataset_builder()
        .with_data(&ys)
        .create("peakYPosRaw")?;
    result
        .new_dataset_builder()
        .with_data(&vs)
        .create("peakTotalIntensity")?;
    Ok(())
}
