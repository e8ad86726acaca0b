//! IDX parsing: images and labels headers/lengths, the data-set constructor that checks
//! dimensions, count agreement and label range, and gzip decoding with a size limit.
//! Input: 2 bytes of split point, then the images file bytes, then the labels file bytes.
#![no_main]

use std::path::Path;

use bayesnas_data::{idx, Dataset, DatasetKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz");
    let _ = idx::parse_images(data, p);
    let _ = idx::parse_labels(data, p);
    if let Ok(out) = idx::maybe_gunzip(data.to_vec(), p, 1 << 20) {
        assert!(out.len() <= 1 << 20);
        let _ = idx::parse_images(&out, p);
    }
    if data.len() >= 2 {
        let split = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
        let (images, labels) = data[2..].split_at(split);
        if let Ok(ds) = Dataset::from_idx_bytes(DatasetKind::Mnist, "f", images, p, labels, p) {
            assert_eq!(ds.images().len(), ds.len() * 28 * 28);
            assert!(ds.labels().iter().all(|&l| l < 10));
        }
    }
});
