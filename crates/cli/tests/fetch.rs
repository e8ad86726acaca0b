//! The download-and-verify path against a local HTTP server on 127.0.0.1: canonical
//! manifests served from real files, resume with Range, servers that ignore Range, corrupted
//! files (rejected, nothing left under the final name), CIFAR-10 archive unpacking.

mod common;

use bayesnas_cli::fetch::{
    fetch_dataset, fetch_files, manifest, unpack_cifar, verify, Digest, FetchError, FetchOptions,
    Fetcher, Outcome, RemoteFile,
};
use bayesnas_data::{cifar, DataSource, DatasetKind};
use common::{listing, Route, Scratch, Server};
use md5::{Digest as _, Md5};

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn quiet() -> FetchOptions {
    FetchOptions {
        quiet: true,
        ..FetchOptions::default()
    }
}

/// A fixture file (random bytes) with its MD5 as the accepted digest.
fn fixture(server: &Server, name: &str, len: usize) -> (RemoteFile, Vec<u8>) {
    let mut x = 0x9e37_79b9u32;
    let body: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    server.route(name, Route::new(body.clone()));
    let file = RemoteFile {
        name: name.to_string(),
        url: format!("{}/{name}", server.base),
        accept: vec![Digest::md5_of_file(&md5_hex(&body))],
    };
    (file, body)
}

/// `Outcome::Downloaded { bytes, resumed_from }`.
fn downloaded(bytes: u64, resumed_from: u64) -> Outcome {
    Outcome::Downloaded {
        bytes,
        resumed_from,
    }
}

/// Fetches `file` into `dir`, where a partial download `NAME.part` holding `part` waits.
fn fetch_over_part(file: &RemoteFile, dir: &Scratch, part: &[u8]) -> Outcome {
    std::fs::write(dir.path().join(format!("{}.part", file.name)), part).unwrap();
    Fetcher::new(true).fetch_file(file, dir.path()).unwrap()
}

#[test]
fn canonical_fashion_mnist_digests_accept_the_vendored_files() {
    let server = Server::start();
    let vendored = common::vendored_dir();
    let files: Vec<RemoteFile> = manifest(DatasetKind::FashionMnist, Some(&server.base))
        .unwrap()
        .into_iter()
        .filter(|f| f.name.starts_with("t10k"))
        .collect();
    assert_eq!(files.len(), 2);
    for f in &files {
        server.route(
            &f.name,
            Route::new(std::fs::read(vendored.join(&f.name)).unwrap()),
        );
    }
    let dir = Scratch::new("canonical");
    let fetcher = Fetcher::new(true);
    for f in &files {
        let outcome = fetcher.fetch_file(f, dir.path()).unwrap();
        assert!(
            matches!(
                outcome,
                Outcome::Downloaded {
                    resumed_from: 0,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(
            std::fs::read(dir.path().join(&f.name)).unwrap(),
            std::fs::read(vendored.join(&f.name)).unwrap()
        );
    }
    assert_eq!(
        listing(dir.path()),
        ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"],
        "no .part files left"
    );
    // Present and verified: no second download.
    server.clear_log();
    for f in &files {
        assert_eq!(
            fetcher.fetch_file(f, dir.path()).unwrap(),
            Outcome::AlreadyPresent
        );
    }
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    // And the result reads back as the data set.
    let src = DataSource::open(DatasetKind::FashionMnist, dir.path()).unwrap();
    assert_eq!(src.train.len(), 10_000);
}

#[test]
fn full_mnist_from_the_shared_copy() {
    let Some(shared) = common::shared_data() else {
        eprintln!("skipped: ../shared/data not found");
        return;
    };
    let server = Server::start();
    for f in manifest(DatasetKind::Mnist, None).unwrap() {
        let body = std::fs::read(shared.join("mnist").join(&f.name)).unwrap();
        server.route(&format!("mnist/{}", f.name), Route::new(body));
    }
    let dir = Scratch::new("mnist");
    let options = FetchOptions {
        mirror: Some(format!("{}/mnist/", server.base)),
        quiet: true,
        keep_archive: false,
    };
    let report = fetch_dataset(DatasetKind::Mnist, dir.path(), &options).unwrap();
    assert_eq!(report.files.len(), 4);
    assert_eq!(report.source.train.len(), 60_000);
    assert_eq!(report.source.test.as_ref().unwrap().len(), 10_000);
    let again = fetch_dataset(DatasetKind::Mnist, dir.path(), &options).unwrap();
    assert!(again
        .files
        .iter()
        .all(|(_, o)| *o == Outcome::AlreadyPresent));
}

#[test]
fn corrupted_files_are_rejected_and_leave_nothing() {
    let server = Server::start();
    let vendored = common::vendored_dir();
    let labels_gz = std::fs::read(vendored.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    // (1) The content changed by one label, recompressed: a valid gzip with the wrong data.
    let mut content = common::gunzip(&labels_gz);
    content[100] = (content[100] + 1) % 10;
    let altered = common::gzip(&content);
    // (2) One byte of the compressed stream flipped: gzip's CRC fails.
    let mut flipped = labels_gz.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    // (3) Truncated.
    let truncated = labels_gz[..labels_gz.len() - 100].to_vec();

    let file = manifest(DatasetKind::FashionMnist, Some(&server.base))
        .unwrap()
        .into_iter()
        .find(|f| f.name == "t10k-labels-idx1-ubyte.gz")
        .unwrap();
    let fetcher = Fetcher::new(true);
    for (what, body) in [
        ("altered", altered),
        ("flipped", flipped),
        ("truncated", truncated),
    ] {
        server.route(&file.name, Route::new(body));
        let dir = Scratch::new(what);
        let err = fetcher.fetch_file(&file, dir.path()).unwrap_err();
        match &err {
            FetchError::Checksum { path, .. } => {
                assert_eq!(path, &dir.path().join(&file.name), "{what}")
            }
            other => panic!("{what}: expected Checksum, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("t10k-labels-idx1-ubyte.gz"), "{msg}");
        assert!(
            msg.contains("bb300cfdad3c16e7a12a480ee83cd310"),
            "names the expected md5: {msg}"
        );
        assert!(
            listing(dir.path()).is_empty(),
            "{what}: {:?}",
            listing(dir.path())
        );
    }
}

#[test]
fn canonical_cifar_checksum_rejects_other_archives() {
    let server = Server::start();
    server.route(
        "cifar-10-binary.tar.gz",
        Route::new(b"not the real archive".to_vec()),
    );
    let dir = Scratch::new("cifar-reject");
    let options = FetchOptions {
        mirror: Some(server.base.clone()),
        quiet: true,
        keep_archive: false,
    };
    let err = fetch_dataset(DatasetKind::Cifar10, dir.path(), &options).unwrap_err();
    assert!(matches!(err, FetchError::Checksum { .. }), "{err:?}");
    assert!(
        err.to_string().contains("c32a1d4ab5d03f1284b67883e8d87530"),
        "{err}"
    );
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[test]
fn interrupted_download_resumes_with_range() {
    let server = Server::start();
    let (file, body) = fixture(&server, "big.bin", 300_000);
    let dir = Scratch::new("resume");
    let fetcher = Fetcher::new(true);
    // The connection drops after 120,000 bytes: an error, the partial file is kept.
    server.route(
        "big.bin",
        Route {
            cut_after: Some(120_000),
            ..Route::new(body.clone())
        },
    );
    let err = fetcher.fetch_file(&file, dir.path()).unwrap_err();
    assert!(matches!(err, FetchError::Network { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("run the same command again to resume"),
        "{err}"
    );
    assert_eq!(listing(dir.path()), ["big.bin.part"]);
    assert_eq!(
        std::fs::read(dir.path().join("big.bin.part")).unwrap(),
        &body[..120_000]
    );
    // The next run asks for the rest only.
    server.route("big.bin", Route::new(body.clone()));
    server.clear_log();
    let outcome = fetcher.fetch_file(&file, dir.path()).unwrap();
    assert_eq!(outcome, downloaded(180_000, 120_000));
    assert_eq!(server.seen().len(), 1);
    assert_eq!(server.seen()[0].range.as_deref(), Some("bytes=120000-"));
    assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), body);
    assert_eq!(listing(dir.path()), ["big.bin"]);
}

#[test]
fn server_ignoring_range_restarts_cleanly() {
    let server = Server::start();
    let (file, body) = fixture(&server, "f.bin", 50_000);
    server.route(
        "f.bin",
        Route {
            honour_range: false,
            ..Route::new(body.clone())
        },
    );
    let dir = Scratch::new("norange");
    let outcome = fetch_over_part(&file, &dir, &body[..10_000]);
    assert_eq!(outcome, downloaded(50_000, 0));
    assert_eq!(server.seen()[0].range.as_deref(), Some("bytes=10000-"));
    assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), body);
}

#[test]
fn corrupt_partial_file_is_discarded_and_downloaded_again() {
    let server = Server::start();
    let (file, body) = fixture(&server, "f.bin", 40_000);
    let dir = Scratch::new("badpart");
    let outcome = fetch_over_part(&file, &dir, &[0u8; 15_000]);
    assert_eq!(outcome, downloaded(40_000, 0));
    let seen: Vec<Option<String>> = server.seen().into_iter().map(|s| s.range).collect();
    assert_eq!(seen, [Some("bytes=15000-".to_string()), None]);
    assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), body);
    assert_eq!(listing(dir.path()), ["f.bin"]);
}

#[test]
fn complete_partial_file_is_finished_after_416() {
    let server = Server::start();
    let (file, body) = fixture(&server, "f.bin", 20_000);
    let dir = Scratch::new("416");
    let outcome = fetch_over_part(&file, &dir, &body);
    assert_eq!(outcome, downloaded(0, 20_000));
    assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), body);
}

#[test]
fn existing_corrupt_file_is_replaced() {
    let server = Server::start();
    let (file, body) = fixture(&server, "f.bin", 10_000);
    let dir = Scratch::new("replace");
    std::fs::write(dir.path().join("f.bin"), b"stale").unwrap();
    let outcome = Fetcher::new(true).fetch_file(&file, dir.path()).unwrap();
    assert!(matches!(outcome, Outcome::Downloaded { .. }));
    assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), body);
}

#[test]
fn http_errors_and_bad_mirrors() {
    let server = Server::start();
    let dir = Scratch::new("404");
    let file = RemoteFile {
        name: "missing.bin".into(),
        url: format!("{}/missing.bin", server.base),
        accept: vec![Digest::md5_of_file("00")],
    };
    let err = Fetcher::new(true)
        .fetch_file(&file, dir.path())
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Http { status: 404, .. }),
        "{err:?}"
    );
    assert!(listing(dir.path()).is_empty());
    for bad in ["ftp://x", "localhost:80", "http://"] {
        let err = manifest(DatasetKind::Mnist, Some(bad)).unwrap_err();
        assert!(matches!(err, FetchError::BadMirror(_)), "{bad}: {err:?}");
    }
    // A name with a path separator is refused before any request.
    let evil = RemoteFile {
        name: "../evil".into(),
        ..file
    };
    assert!(Fetcher::new(true).fetch_file(&evil, dir.path()).is_err());
}

fn cifar_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append_data(&mut h, path, bytes).unwrap();
    };
    for (i, name) in cifar::TRAIN_FILES.iter().enumerate() {
        let image = vec![i as u8; cifar::IMAGE_BYTES];
        let batch = cifar::encode_batch(&[(i as u8, &image), (9, &image)]);
        add(&format!("cifar-10-batches-bin/{name}"), &batch);
    }
    let image = vec![7u8; cifar::IMAGE_BYTES];
    add(
        "cifar-10-batches-bin/test_batch.bin",
        &cifar::encode_batch(&[(1, &image), (2, &image), (3, &image)]),
    );
    add("cifar-10-batches-bin/batches.meta.txt", b"airplane\n");
    // Members outside the expected folder or with unknown names are ignored.
    add("elsewhere/data_batch_1.bin", b"ignored");
    add("cifar-10-batches-bin/unexpected.sh", b"ignored");
    common::gzip(&builder.into_inner().unwrap())
}

#[test]
fn cifar_archive_is_downloaded_verified_and_unpacked() {
    let server = Server::start();
    let archive = cifar_archive();
    server.route("cifar-10-binary.tar.gz", Route::new(archive.clone()));
    let file = RemoteFile {
        name: "cifar-10-binary.tar.gz".into(),
        url: format!("{}/cifar-10-binary.tar.gz", server.base),
        accept: vec![Digest::md5_of_file(&md5_hex(&archive))],
    };
    let dir = Scratch::new("cifar");
    let report = fetch_files(
        DatasetKind::Cifar10,
        std::slice::from_ref(&file),
        dir.path(),
        &quiet(),
    )
    .unwrap();
    assert_eq!(report.source.train.len(), 10);
    assert_eq!(report.source.test.as_ref().unwrap().len(), 3);
    assert_eq!(report.source.train.label(1), 9);
    assert_eq!(
        listing(dir.path()),
        ["cifar-10-batches-bin"],
        "archive removed"
    );
    let unpacked = listing(&dir.path().join("cifar-10-batches-bin"));
    assert_eq!(
        unpacked,
        [
            "batches.meta.txt",
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin"
        ]
    );
    // Second run: already there, no request.
    server.clear_log();
    let again = fetch_files(
        DatasetKind::Cifar10,
        std::slice::from_ref(&file),
        dir.path(),
        &quiet(),
    )
    .unwrap();
    assert_eq!(again.files[0].1, Outcome::AlreadyPresent);
    assert!(server.seen().is_empty());

    // --keep-archive keeps it, and verify() accepts it.
    let dir = Scratch::new("cifar-keep");
    let keep = FetchOptions {
        keep_archive: true,
        ..quiet()
    };
    fetch_files(
        DatasetKind::Cifar10,
        std::slice::from_ref(&file),
        dir.path(),
        &keep,
    )
    .unwrap();
    let kept = dir.path().join("cifar-10-binary.tar.gz");
    verify(&kept, &file.accept).unwrap();
}

#[test]
fn cifar_archive_missing_members_is_an_error() {
    let dir = Scratch::new("cifar-missing");
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_cksum();
    builder
        .append_data(&mut h, "cifar-10-batches-bin/readme.html", &b"hi\n"[..])
        .unwrap();
    let archive = dir.path().join("a.tar.gz");
    std::fs::write(&archive, common::gzip(&builder.into_inner().unwrap())).unwrap();
    let err = unpack_cifar(&archive, dir.path()).unwrap_err();
    assert!(matches!(err, FetchError::Archive { .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_1.bin"), "{err}");
    // Not an archive at all.
    std::fs::write(&archive, b"plain text").unwrap();
    assert!(unpack_cifar(&archive, dir.path()).is_err());
}
