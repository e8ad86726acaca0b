//! IDX files (the MNIST / Fashion-MNIST format) and gzip.
//!
//! An IDX file is a big-endian header followed by the data: the magic number
//! `0x0000_08DD` (`08` = unsigned bytes, `DD` = number of dimensions), one `u32` per
//! dimension, then the elements. Images are `0x0000_0803` (count x rows x cols), labels
//! `0x0000_0801` (count). The parsers take byte slices, never panic, and check the declared
//! size against the actual length in both directions.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Largest decompressed file the readers accept (the largest file we read, MNIST's training
/// images, is 47 MB); protects against gzip bombs.
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A parsed IDX images file; `pixels` borrows from the input (count x rows x cols bytes).
#[derive(Debug, Clone, Copy)]
pub struct IdxImages<'a> {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: &'a [u8],
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the magic number and the header length; returns the dimensions.
fn header(bytes: &[u8], path: &Path, magic: u32, what: &'static str) -> Result<Vec<u64>> {
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "IDX header",
            expected: 4,
            found: bytes.len() as u64,
        });
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            what,
            expected: magic,
            found,
        });
    }
    let dims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * dims;
    if bytes.len() < header_len {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "IDX header",
            expected: header_len as u64,
            found: bytes.len() as u64,
        });
    }
    Ok((0..dims)
        .map(|d| u64::from(be_u32(bytes, 4 + 4 * d)))
        .collect())
}

/// Checks that the data after a header of `header_len` bytes is exactly `payload` bytes long.
fn check_length(
    bytes: &[u8],
    path: &Path,
    what: &'static str,
    header_len: usize,
    payload: Option<u64>,
) -> Result<()> {
    let found = bytes.len() as u64;
    // A declared size that overflows u64 can never be satisfied: report it as truncation.
    let expected = payload
        .and_then(|p| p.checked_add(header_len as u64))
        .unwrap_or(u64::MAX);
    if found < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what,
            expected,
            found,
        });
    }
    if found > expected {
        return Err(DataError::TrailingData {
            path: path.to_path_buf(),
            what,
            expected,
            found,
        });
    }
    Ok(())
}

/// Parses an (uncompressed) IDX images file.
pub fn parse_images<'a>(bytes: &'a [u8], path: &Path) -> Result<IdxImages<'a>> {
    let what = "IDX images file (unsigned bytes, 3 dimensions)";
    let dims = header(bytes, path, IMAGES_MAGIC, what)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    let payload = count.checked_mul(rows).and_then(|v| v.checked_mul(cols));
    check_length(bytes, path, "IDX images file", 16, payload)?;
    // The length check proves count*rows*cols fits in memory, hence in usize.
    Ok(IdxImages {
        count: count as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels: &bytes[16..],
    })
}

/// Parses an (uncompressed) IDX labels file; the range of the labels is checked by the caller,
/// who knows the number of classes.
pub fn parse_labels<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a [u8]> {
    let what = "IDX labels file (unsigned bytes, 1 dimension)";
    let dims = header(bytes, path, LABELS_MAGIC, what)?;
    check_length(bytes, path, "IDX labels file", 8, Some(dims[0]))?;
    Ok(&bytes[8..])
}

/// Whether `bytes` start with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Decompresses `bytes` if they are gzip (at most `limit` bytes of output), else returns them
/// unchanged.
pub fn maybe_gunzip(bytes: Vec<u8>, path: &Path, limit: u64) -> Result<Vec<u8>> {
    if !is_gzip(&bytes) {
        return Ok(bytes);
    }
    gunzip(&bytes, path, limit)
}

/// Decompresses a gzip stream (all members) into memory, at most `limit` bytes.
pub fn gunzip(bytes: &[u8], path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let decoder = flate2::read::MultiGzDecoder::new(bytes);
    decoder
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| DataError::Gzip {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() as u64 > limit {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(out)
}

/// Reads a file and decompresses it if it is gzip.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    maybe_gunzip(bytes, path, MAX_DECOMPRESSED_BYTES)
}

/// Builds an IDX images file (used by tests and fixtures).
pub fn encode_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [IMAGES_MAGIC, count, rows, cols] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Builds an IDX labels file (used by tests and fixtures).
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let bytes = encode_images(2, 3, 4, &pixels);
        let p = Path::new("x");
        let img = parse_images(&bytes, p).unwrap();
        assert_eq!((img.count, img.rows, img.cols), (2, 3, 4));
        assert_eq!(img.pixels, &pixels[..]);
        let lab = encode_labels(&[1, 2, 3]);
        assert_eq!(parse_labels(&lab, p).unwrap(), &[1, 2, 3]);
    }

    #[test]
    fn overflowing_dimensions_are_truncation_not_panic() {
        let mut bytes = encode_images(0, 0, 0, &[]);
        bytes[4..16].fill(0xff);
        let err = parse_images(&bytes, Path::new("big")).unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
    }

    #[test]
    fn gzip_limit() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[0u8; 10_000]).unwrap();
        let gz = enc.finish().unwrap();
        let p = Path::new("bomb.gz");
        assert_eq!(gunzip(&gz, p, 10_000).unwrap().len(), 10_000);
        let err = gunzip(&gz, p, 9_999).unwrap_err();
        assert!(matches!(err, DataError::TooLarge { .. }), "{err}");
        let err = gunzip(&gz[..gz.len() / 2], p, 10_000).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    }
}
