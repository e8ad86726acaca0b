//! Helpers shared by the data crate's tests: scratch directories and generated files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bayesnas_data::{cifar, idx};
use bayesnas_engine::Rng;

mod files;

#[allow(unused_imports)] // not every test target uses both
pub use files::{gzip, Scratch};

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(256) as u8).collect()
}

/// `n` random 28x28 images and labels `i % 10` as IDX files.
pub fn idx_pair(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let pixels = random_bytes(n * 28 * 28, seed);
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let img = idx::encode_images(n as u32, 28, 28, &pixels);
    let lab = idx::encode_labels(&labels);
    (img, lab, pixels, labels)
}

/// A CIFAR-10 batch of `n` random records with labels `(i + offset) % 10`.
pub fn cifar_batch(n: usize, offset: usize, seed: u64) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let images = random_bytes(n * cifar::IMAGE_BYTES, seed);
    let labels: Vec<u8> = (0..n).map(|i| ((i + offset) % 10) as u8).collect();
    let records: Vec<(u8, &[u8])> = labels
        .iter()
        .zip(images.chunks_exact(cifar::IMAGE_BYTES))
        .map(|(&l, im)| (l, im))
        .collect();
    (cifar::encode_batch(&records), images, labels)
}

/// The shared data folder (`../shared/data` from the workspace root), if present.
pub fn shared_data() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = root.join("../shared/data");
    p.is_dir().then(|| p.canonicalize().unwrap())
}
