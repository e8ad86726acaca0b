//! Randomised "never panics" checks of the parsers on mutated valid files (a quick, seeded
//! complement to the cargo-fuzz targets in fuzz/). Every outcome must be `Ok` or a typed
//! error; a panic fails the test.

mod common;

use std::path::Path;

use bayesnas_data::{cifar, idx, Dataset, DatasetKind};
use bayesnas_engine::Rng;

fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = base.to_vec();
    match rng.below(6) {
        // Flip random bytes, with a bias towards the header.
        0 => {
            for _ in 0..1 + rng.below(4) {
                if v.is_empty() {
                    break;
                }
                let at = if rng.bernoulli(0.7) {
                    rng.below(v.len().min(16))
                } else {
                    rng.below(v.len())
                };
                v[at] = rng.below(256) as u8;
            }
        }
        // Truncate.
        1 => v.truncate(rng.below(v.len() + 1)),
        // Extend.
        2 => v.extend((0..1 + rng.below(40)).map(|_| rng.below(256) as u8)),
        // Extreme header fields.
        3 => {
            if v.len() >= 16 {
                let field = 4 * (1 + rng.below(3));
                let val = [0u32, 1, 27, 28, 29, 0x7fff_ffff, u32::MAX][rng.below(7)];
                v[field..field + 4].copy_from_slice(&val.to_be_bytes());
            }
        }
        // Random bytes entirely.
        4 => {
            let n = rng.below(64);
            v = (0..n).map(|_| rng.below(256) as u8).collect();
        }
        // Cut or extend by a whole-ish record (for CIFAR).
        _ => {
            let n = rng.below(2 * cifar::RECORD_BYTES);
            v.resize(n, 3);
        }
    }
    v
}

#[test]
fn idx_parsers_never_panic_on_mutations() {
    let (img, lab, ..) = common::idx_pair(3, 1);
    let mut rng = Rng::new(2024);
    let p = Path::new("mutated");
    let (mut ok, mut err) = (0, 0);
    for _ in 0..20_000 {
        let mi = mutate(&img, &mut rng);
        let ml = mutate(&lab, &mut rng);
        let _ = idx::parse_images(&mi, p);
        let _ = idx::parse_labels(&ml, p);
        match Dataset::from_idx_bytes(DatasetKind::Mnist, "m", &mi, p, &lab, p) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(e.to_string().contains("mutated"), "{e}");
                err += 1;
            }
        }
        // gzip path: corrupt compressed streams are errors too.
        let gz = common::gzip(&ml);
        let _ = idx::maybe_gunzip(mutate(&gz, &mut rng), p, 1 << 20);
    }
    assert!(ok > 0 && err > 0, "{ok} ok, {err} errors");
}

#[test]
fn cifar_parser_never_panics_on_mutations() {
    let (batch, ..) = common::cifar_batch(2, 0, 3);
    let mut rng = Rng::new(99);
    let p = Path::new("mutated.bin");
    let (mut ok, mut err) = (0, 0);
    for _ in 0..5_000 {
        let m = mutate(&batch, &mut rng);
        match cifar::parse_batch(&m, p) {
            Ok((images, labels)) => {
                assert_eq!(images.len(), labels.len() * cifar::IMAGE_BYTES);
                ok += 1;
            }
            Err(e) => {
                assert!(e.to_string().contains("mutated.bin"), "{e}");
                err += 1;
            }
        }
    }
    assert!(ok > 0 && err > 0, "{ok} ok, {err} errors");
}
