//! Helpers shared by the data crate's tests: scratch directories and generated files.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bayesnas_data::{cifar, idx};
use bayesnas_engine::Rng;

/// A fresh, empty directory under cargo's per-target scratch space, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "bayesnas-data-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

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
