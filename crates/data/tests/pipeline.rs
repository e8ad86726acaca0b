//! Splits, augmentation and the background loader.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bayesnas_data::{
    Augment, Dataset, DatasetKind, Loader, LoaderConfig, SearchSplits, SplitConfig,
};

fn embedded() -> Arc<Dataset> {
    Arc::new(Dataset::embedded_fashion_mnist_test().unwrap())
}

/// A small CIFAR-shaped data set (3 channels) built in memory.
fn small_cifar(n: usize) -> Arc<Dataset> {
    let (bytes, ..) = common::cifar_batch(n, 0, 77);
    Arc::new(Dataset::from_cifar_batches("tiny", &[(&bytes, "tiny.bin".as_ref())]).unwrap())
}

#[test]
fn splits_are_disjoint_complete_stratified_and_reproducible() {
    let ds = embedded();
    let cfg = SplitConfig::default();
    let a = SearchSplits::of(&ds, cfg, 7).unwrap();
    let b = SearchSplits::of(&ds, cfg, 7).unwrap();
    assert_eq!(a, b, "same seed, same split");
    let c = SearchSplits::of(&ds, cfg, 8).unwrap();
    assert_ne!(a.valid, c.valid, "another seed, another split");

    let (w, s, v): (HashSet<_>, HashSet<_>, HashSet<_>) = (
        a.weight.iter().collect(),
        a.switch.iter().collect(),
        a.valid.iter().collect(),
    );
    assert_eq!(w.len(), a.weight.len(), "no duplicates");
    assert!(w.is_disjoint(&s) && w.is_disjoint(&v) && s.is_disjoint(&v));
    assert_eq!(a.len(), ds.len(), "every example in exactly one part");
    // 1,000 per class: 100 validation, 90 weight, 810 switch per class.
    assert_eq!(
        (a.valid.len(), a.weight.len(), a.switch.len()),
        (1_000, 900, 8_100)
    );
    for part in [&a.valid, &a.weight, &a.switch] {
        let mut counts = [0usize; 10];
        for &i in part.iter() {
            counts[usize::from(ds.label(i))] += 1;
        }
        assert!(counts.iter().all(|&c| c * 10 == part.len()), "{counts:?}");
    }
    let train = a.train();
    assert_eq!(train.len(), 9_000);
    assert!(train.windows(2).all(|p| p[0] < p[1]));
}

#[test]
fn split_rejects_bad_fractions_and_empty_parts() {
    let labels = vec![0u8; 100];
    for (v, w) in [
        (0.0, 0.1),
        (1.0, 0.1),
        (0.1, 0.0),
        (0.1, f64::NAN),
        (-0.1, 0.5),
    ] {
        let cfg = SplitConfig {
            valid_fraction: v,
            weight_fraction: w,
        };
        assert!(SearchSplits::new(&labels, 1, cfg, 0).is_err(), "{v} {w}");
    }
    // Too few examples for three parts.
    assert!(SearchSplits::new(&[0, 1], 2, SplitConfig::default(), 0).is_err());
    // Labels beyond the class count are an error, not a panic.
    assert!(SearchSplits::new(&[0, 5], 2, SplitConfig::default(), 0).is_err());
}

#[test]
fn eval_batches_are_normalised_in_order() {
    let ds = embedded();
    let loader = Loader::all(Arc::clone(&ds), LoaderConfig::eval(1_000)).unwrap();
    assert_eq!(loader.batches_per_epoch(), 10);
    let (mut sum, mut sq, mut n) = (0f64, 0f64, 0usize);
    let mut next = 0;
    for batch in loader.epoch(0).unwrap() {
        assert_eq!(batch.images.shape(), &[1_000, 1, 28, 28]);
        assert_eq!(batch.indices, (next..next + 1_000).collect::<Vec<_>>());
        next += 1_000;
        let x = batch.images.cpu();
        // Exact value of one pixel: (p / 255 - mean) / std.
        let p = f32::from(ds.image(batch.indices[0])[300]);
        assert!((x[300] - (p / 255.0 - 0.2860) / 0.3530).abs() < 1e-5);
        for &v in x {
            sum += f64::from(v);
            sq += f64::from(v) * f64::from(v);
            n += 1;
        }
        for (l, &i) in batch.labels.iter().zip(&batch.indices) {
            assert_eq!(*l, u32::from(ds.label(i)));
        }
    }
    assert_eq!(next, 10_000);
    let mean = sum / n as f64;
    let std = (sq / n as f64 - mean * mean).sqrt();
    // The training-set constants put the test set close to zero mean and unit std.
    assert!(
        mean.abs() < 0.02 && (std - 1.0).abs() < 0.02,
        "{mean} {std}"
    );
}

#[test]
fn epochs_cover_the_split_and_reshuffle() {
    let ds = embedded();
    let splits = SearchSplits::of(&ds, SplitConfig::default(), 3).unwrap();
    let mut cfg = LoaderConfig::train(64, DatasetKind::FashionMnist.default_augment(), 11);
    cfg.drop_last = false;
    let loader = Loader::new(Arc::clone(&ds), splits.weight.clone(), cfg.clone()).unwrap();
    assert_eq!(loader.batches_per_epoch(), 900usize.div_ceil(64));
    let e0: Vec<usize> = loader.epoch(0).unwrap().flat_map(|b| b.indices).collect();
    let mut sorted = e0.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, splits.weight, "each example exactly once per epoch");
    let e1: Vec<usize> = loader.epoch(1).unwrap().flat_map(|b| b.indices).collect();
    assert_ne!(e0, e1, "each epoch has its own order");
    assert_eq!(e0, loader.order(0));

    cfg.drop_last = true;
    let loader = Loader::new(Arc::clone(&ds), splits.weight.clone(), cfg).unwrap();
    let sizes: Vec<usize> = loader.epoch(0).unwrap().map(|b| b.len()).collect();
    assert_eq!(sizes, vec![64; 900 / 64]);
    assert_eq!(loader.examples_per_epoch(), 64 * (900 / 64));
}

fn collect(loader: &Loader, epoch: u64, delay: Duration) -> Vec<(Vec<f32>, Vec<u32>)> {
    loader
        .epoch(epoch)
        .unwrap()
        .map(|b| {
            std::thread::sleep(delay);
            (b.images.to_vec(), b.labels)
        })
        .collect()
}

#[test]
fn loader_is_deterministic_regardless_of_timing_and_prefetch() {
    let ds = small_cifar(300);
    let augment = Augment {
        crop_padding: 4,
        hflip: true,
        cutout: 8,
    };
    let make = |prefetch: usize, seed: u64| {
        let mut cfg = LoaderConfig::train(32, augment, seed);
        cfg.prefetch = prefetch;
        Loader::all(Arc::clone(&ds), cfg).unwrap()
    };
    let fast = collect(&make(8, 5), 2, Duration::ZERO);
    let slow = collect(&make(1, 5), 2, Duration::from_millis(3));
    assert_eq!(fast.len(), 300 / 32);
    assert!(
        fast == slow,
        "same seed and epoch, same batches, whatever the timing"
    );
    // The synchronous builder gives the thread's batches.
    let l = make(2, 5);
    for (b, (images, labels)) in fast.iter().enumerate() {
        let batch = l.batch(2, b).unwrap();
        assert_eq!(&batch.images.to_vec(), images);
        assert_eq!(&batch.labels, labels);
        assert_eq!(batch.images.shape(), &[32, 3, 32, 32]);
    }
    assert!(l.batch(2, fast.len()).is_none());
    // Another seed or epoch changes the augmentation (and order).
    assert!(collect(&make(2, 6), 2, Duration::ZERO) != fast);
    assert!(collect(&make(2, 5), 3, Duration::ZERO) != fast);
}

#[test]
fn augmentation_keeps_shapes_and_changes_pixels_not_labels() {
    let ds = small_cifar(64);
    let plain = Loader::all(Arc::clone(&ds), LoaderConfig::eval(64)).unwrap();
    let mut cfg = LoaderConfig::train(64, DatasetKind::Cifar10.default_augment(), 1);
    cfg.shuffle = false;
    let aug = Loader::all(Arc::clone(&ds), cfg).unwrap();
    let p = plain.batch(0, 0).unwrap();
    let a = aug.batch(0, 0).unwrap();
    assert_eq!(p.images.shape(), a.images.shape());
    assert_eq!(p.labels, a.labels);
    assert_ne!(p.images.to_vec(), a.images.to_vec());
    assert!(a.images.all_finite());
}

#[test]
fn dropping_an_epoch_early_stops_the_thread() {
    let ds = embedded();
    let mut cfg = LoaderConfig::train(16, Augment::NONE, 0);
    cfg.prefetch = 1;
    let loader = Loader::all(ds, cfg).unwrap();
    for _ in 0..20 {
        let mut epoch = loader.epoch(0).unwrap();
        assert_eq!(epoch.len(), 625);
        epoch.next().unwrap();
        drop(epoch); // must not hang
    }
}

#[test]
fn loader_rejects_bad_configuration() {
    let ds = small_cifar(10);
    let mut cfg = LoaderConfig::eval(0);
    assert!(Loader::all(Arc::clone(&ds), cfg.clone()).is_err());
    cfg.batch_size = 4;
    cfg.prefetch = 0;
    assert!(Loader::all(Arc::clone(&ds), cfg.clone()).is_err());
    cfg.prefetch = 2;
    let err = Loader::new(Arc::clone(&ds), vec![0, 10], cfg.clone()).unwrap_err();
    assert!(err.to_string().contains("index 10"), "{err}");
    cfg.normalization = Some(DatasetKind::Mnist.normalization()); // 1 channel for 3
    assert!(Loader::all(ds, cfg).is_err());
}
