//! The vendored Fashion-MNIST test set: compiled-in copy and the files in data/.

mod common;

use std::path::Path;

use bayesnas_data::{DataSource, Dataset, DatasetKind, Origin};

fn check_fashion_test(ds: &Dataset) {
    assert_eq!(ds.len(), 10_000);
    assert_eq!(ds.image_shape(), [1, 28, 28]);
    assert_eq!(ds.class_counts(), vec![1_000; 10]);
    assert_eq!(&ds.labels()[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    // Not a blank image: the first test image (an ankle boot) has plenty of ink.
    assert!(ds.image(0).iter().filter(|&&p| p > 0).count() > 200);
}

#[test]
fn embedded_fashion_mnist_test_set() {
    let ds = Dataset::embedded_fashion_mnist_test().unwrap();
    check_fashion_test(&ds);
    assert_eq!(ds.kind(), DatasetKind::FashionMnist);
    let src = DataSource::embedded().unwrap();
    assert_eq!(src.origin, Origin::Embedded);
    assert!(src.development_only && src.test.is_none());
}

#[test]
fn vendored_files_read_from_disk_match_the_embedded_copy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fashion-mnist-test");
    assert!(
        dir.join("COPYRIGHT").is_file(),
        "the licence must sit beside the data"
    );
    let src = DataSource::open(DatasetKind::FashionMnist, &dir).unwrap();
    assert!(src.development_only);
    check_fashion_test(&src.train);
    let embedded = Dataset::embedded_fashion_mnist_test().unwrap();
    assert_eq!(src.train.images(), embedded.images());
}

#[test]
fn shared_full_sets_when_present() {
    let Some(shared) = common::shared_data() else {
        eprintln!("skipped: ../shared/data not found");
        return;
    };
    for kind in [DatasetKind::FashionMnist, DatasetKind::Mnist] {
        let src = DataSource::open(kind, &shared.join(kind.name())).unwrap();
        assert!(!src.development_only);
        assert_eq!(src.train.len(), 60_000);
        assert_eq!(src.test.as_ref().unwrap().len(), 10_000);
        if kind == DatasetKind::FashionMnist {
            assert_eq!(src.train.class_counts(), vec![6_000; 10]);
        }
    }
}
