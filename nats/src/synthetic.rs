//! Detector-like synthetic data: mostly dark pixels, Poisson photons, bright peaks.
//!
//! Used by the agent's synthetic source, the demo and benchmarks, so that
//! compression figures are measured on data shaped like real detector frames
//! (pedestal-subtracted, u16), not on zeros or on random noise.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson};

use crate::wire::{Array, Event, Scalar};

/// Parameters of a synthetic detector.
#[derive(Debug, Clone)]
pub struct DetectorModel {
    /// Image height in pixels.
    pub height: u64,
    /// Image width in pixels.
    pub width: u64,
    /// Fraction of pixels hit by at least one photon (0..1).
    pub photon_density: f64,
    /// ADU of one photon.
    pub adu_per_photon: u16,
    /// Number of bright Bragg-like peaks per frame.
    pub peaks: u32,
    /// Seed of the pseudo-random generator (same seed, same frames).
    pub seed: u64,
}

impl Default for DetectorModel {
    fn default() -> Self {
        DetectorModel {
            height: 512,
            width: 1024,
            photon_density: 0.02,
            adu_per_photon: 12,
            peaks: 30,
            seed: 1,
        }
    }
}

impl DetectorModel {
    /// Generates one frame of `u16` pixels for event `index` (deterministic per seed and index).
    pub fn frame(&self, index: u64) -> Vec<u16> {
        let mut rng =
            SmallRng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
        let n = (self.height * self.width) as usize;
        let mut pixels = vec![0u16; n];
        if n == 0 {
            return pixels;
        }
        // Sparse photon hits: sample hit positions instead of every pixel.
        let hits = (n as f64 * self.photon_density.clamp(0.0, 1.0)) as usize;
        let photons: Poisson<f64> = Poisson::new(1.2).expect("positive mean");
        for _ in 0..hits {
            let at = rng.random_range(0..n);
            let count = photons.sample(&mut rng).max(1.0) as u16;
            let noise = rng.random_range(0..3u16);
            pixels[at] = pixels[at].saturating_add(count * self.adu_per_photon + noise);
        }
        for _ in 0..self.peaks {
            let cy = rng.random_range(0..self.height) as i64;
            let cx = rng.random_range(0..self.width) as i64;
            let peak = rng.random_range(500.0..20_000.0f64);
            for dy in -3i64..=3 {
                for dx in -3i64..=3 {
                    let (y, x) = (cy + dy, cx + dx);
                    if y < 0 || x < 0 || y >= self.height as i64 || x >= self.width as i64 {
                        continue;
                    }
                    let value = peak * (-((dx * dx + dy * dy) as f64) / 2.0).exp();
                    let at = (y as u64 * self.width + x as u64) as usize;
                    pixels[at] = pixels[at].saturating_add(value as u16);
                }
            }
        }
        pixels
    }

    /// A full event: the frame as array `field` plus typical per-shot scalars.
    pub fn event(&self, field: &str, index: u64, time_ns: u64) -> Event {
        let mut event = Event {
            index,
            time_ns,
            ..Default::default()
        };
        let frame = self.frame(index);
        let array =
            Array::from_u16(vec![self.height, self.width], &frame).expect("shape matches pixels");
        event.arrays.insert(field.to_string(), array);
        let mut rng = SmallRng::seed_from_u64(self.seed ^ index.rotate_left(17));
        event.scalars.insert(
            "photon_energy_ev".into(),
            Scalar::Float(9500.0 + rng.random_range(-5.0..5.0)),
        );
        event.scalars.insert(
            "pulse_energy_mj".into(),
            Scalar::Float(rng.random_range(0.5..3.0)),
        );
        event
            .scalars
            .insert("pulse_id".into(), Scalar::Int(index as i64 * 3));
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_deterministic_sparse_and_bright() {
        let model = DetectorModel {
            height: 128,
            width: 128,
            ..Default::default()
        };
        let a = model.frame(3);
        assert_eq!(a, model.frame(3));
        assert_ne!(a, model.frame(4));
        let dark = a.iter().filter(|&&p| p == 0).count();
        assert!(
            dark > a.len() * 8 / 10,
            "mostly dark: {dark} of {}",
            a.len()
        );
        assert!(a.iter().any(|&p| p > 400), "has bright peaks");
    }
}
