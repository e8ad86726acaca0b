//! CIFAR-10 binary batches (`data_batch_1.bin` ... `data_batch_5.bin`, `test_batch.bin`).
//!
//! Each record is 3,073 bytes: one label byte (0..=9), then 3,072 bytes of a 32x32 RGB image
//! in CHW order (1,024 red, 1,024 green, 1,024 blue, each row-major). A batch file is a
//! sequence of records with no header.

use std::path::Path;

use crate::error::{DataError, Result};

/// Bytes per image (3 x 32 x 32).
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes per record: a label byte, then the image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Number of classes.
pub const CLASSES: usize = 10;
/// File names of the training batches.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// File name of the test batch.
pub const TEST_FILE: &str = "test_batch.bin";
/// Sub-directory the official archive unpacks into.
pub const ARCHIVE_DIR: &str = "cifar-10-batches-bin";

/// Parses one batch file, appending its images (CHW bytes) and labels to the outputs.
/// Returns the number of records. On error the outputs are left unchanged.
pub fn parse_batch_into(
    bytes: &[u8],
    path: &Path,
    images: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<usize> {
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    if bytes.len() % RECORD_BYTES != 0 {
        return Err(DataError::BadSize {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            record: RECORD_BYTES,
        });
    }
    let n = bytes.len() / RECORD_BYTES;
    if let Some((index, record)) = bytes
        .chunks_exact(RECORD_BYTES)
        .enumerate()
        .find(|(_, r)| usize::from(r[0]) >= CLASSES)
    {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label: record[0],
            classes: CLASSES,
        });
    }
    images.reserve(n * IMAGE_BYTES);
    labels.reserve(n);
    for record in bytes.chunks_exact(RECORD_BYTES) {
        labels.push(record[0]);
        images.extend_from_slice(&record[1..]);
    }
    Ok(n)
}

/// Parses one batch file into (images, labels).
pub fn parse_batch(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    parse_batch_into(bytes, path, &mut images, &mut labels)?;
    Ok((images, labels))
}

/// Builds a batch file from (label, image) records (used by tests and fixtures).
pub fn encode_batch(records: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * RECORD_BYTES);
    for (label, image) in records {
        out.push(*label);
        out.extend_from_slice(image);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_in_order() {
        let a = vec![1u8; IMAGE_BYTES];
        let b = vec![2u8; IMAGE_BYTES];
        let bytes = encode_batch(&[(3, &a), (9, &b)]);
        let (images, labels) = parse_batch(&bytes, Path::new("b.bin")).unwrap();
        assert_eq!(labels, vec![3, 9]);
        assert_eq!(&images[..IMAGE_BYTES], &a[..]);
        assert_eq!(&images[IMAGE_BYTES..], &b[..]);
    }
}
