//! Input-pipeline throughput: batches/s over the full Fashion-MNIST training set (60,000
//! images, batches of 64, random crop with padding 2 + cutout 16), built on the loader's
//! background thread and consumed as fast as possible. Needs `../shared/data/fashion-mnist`
//! (relative to the workspace root, or BAYESNAS_DATA_DIR=/path/to/fashion-mnist); without it
//! the benchmark prints a message and measures nothing. Throughput is reported in elements/s
//! where an element is one batch of 64 images.
//!
//! Run: `cargo bench -p bayesnas-data --bench pipeline`

use std::path::PathBuf;
use std::sync::Arc;

use bayesnas_data::{Augment, DataSource, DatasetKind, Loader, LoaderConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: usize = 64;

fn data_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("BAYESNAS_DATA_DIR") {
        return Some(PathBuf::from(d));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/fashion-mnist");
    p.join("train-images-idx3-ubyte.gz").is_file().then_some(p)
}

fn pipeline(c: &mut Criterion) {
    let Some(dir) = data_dir() else {
        eprintln!("pipeline bench skipped: ../shared/data/fashion-mnist not found (set BAYESNAS_DATA_DIR)");
        return;
    };
    let source = match DataSource::open(DatasetKind::FashionMnist, &dir) {
        Ok(s) if !s.development_only => s,
        Ok(_) => {
            eprintln!(
                "pipeline bench skipped: {} has no training files",
                dir.display()
            );
            return;
        }
        Err(e) => {
            eprintln!("pipeline bench skipped: {e}");
            return;
        }
    };
    let augment = Augment {
        crop_padding: 2,
        hflip: false,
        cutout: 16,
    };
    let loader = Loader::all(
        Arc::clone(&source.train),
        LoaderConfig::train(BATCH, augment, 0),
    )
    .expect("loader");
    let batches = loader.batches_per_epoch() as u64;

    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batches));
    let mut epoch = 0u64;
    group.bench_function("fashion-mnist-train/epoch/batch64/crop2+cutout16", |b| {
        b.iter(|| {
            epoch += 1;
            let mut n = 0u64;
            for batch in loader.epoch(epoch).expect("epoch") {
                n += batch.len() as u64;
                std::hint::black_box(&batch.images);
            }
            assert_eq!(n, batches * BATCH as u64);
        })
    });
    // For comparison: the same epoch without augmentation (gather + normalise only).
    let plain = Loader::all(
        Arc::clone(&source.train),
        LoaderConfig::train(BATCH, Augment::NONE, 0),
    )
    .expect("loader");
    group.bench_function("fashion-mnist-train/epoch/batch64/no-augmentation", |b| {
        b.iter(|| {
            epoch += 1;
            plain
                .epoch(epoch)
                .expect("epoch")
                .map(|b| b.len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
