//! CIFAR-10 batch parsing: record size, label range, and concatenation of batches.
#![no_main]

use std::path::Path;

use bayesnas_data::{cifar, Dataset};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz.bin");
    if let Ok((images, labels)) = cifar::parse_batch(data, p) {
        assert_eq!(images.len(), labels.len() * cifar::IMAGE_BYTES);
        assert!(labels.iter().all(|&l| l < 10));
    }
    let half = data.len() / 2;
    let _ = Dataset::from_cifar_batches("f", &[(&data[..half], p), (&data[half..], p)]);
});
