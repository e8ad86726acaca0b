//! The `bayesnas` binary as a user runs it: help, info, fetch, and clear errors (non-zero
//! exit, no panic) for options that cannot work.

mod common;

use std::process::{Command, Output};

use common::{Route, Scratch, Server};

fn bayesnas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bayesnas"))
        .args(args)
        .output()
        .expect("run bayesnas")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and expects success; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = bayesnas(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs and expects failure with `code`; returns stderr, which must not show a panic.
fn fails(args: &[&str], code: i32) -> String {
    let out = bayesnas(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    stderr
}

#[test]
fn help_reads_well() {
    let help = ok(&["--help"]);
    for want in [
        "Usage: bayesnas <COMMAND>",
        "info",
        "fetch",
        "Fashion-MNIST",
        "Examples:",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
    let info_help = ok(&["info", "--help"]);
    for want in [
        "--dataset",
        "--data-dir",
        "--device",
        "--threads",
        "--seed",
        "--out",
        "--quiet",
        "fashion-mnist",
        "cifar10",
    ] {
        assert!(
            info_help.contains(want),
            "info --help lacks {want:?}:\n{info_help}"
        );
    }
    let fetch_help = ok(&["fetch", "--help"]);
    assert!(fetch_help.contains("--dir"));
    assert!(!fetch_help.contains("--mirror"), "--mirror is hidden");
    assert!(ok(&["--version"]).contains(env!("CARGO_PKG_VERSION")));
    // No subcommand: help on stderr, usage exit status.
    let out = bayesnas(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage"));
}

#[test]
fn info_reports_version_threads_cuda_and_data() {
    let out = ok(&["info", "--threads", "1", "--seed", "5"]);
    assert!(
        out.contains(&format!("bayesnas {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains("threads:  1 "), "{out}");
    // CI has no GPU: the line says why CUDA is unavailable.
    assert!(out.contains("cuda:     unavailable: "), "{out}");
    assert!(out.contains("device:   cpu (--device auto)"), "{out}");
    assert!(
        out.contains("fashion-mnist (embedded): 10000 training images"),
        "{out}"
    );
    assert!(out.contains("not comparable"), "{out}");
    assert!(
        out.contains("weight 900, switch 8100, validation 1000 (seed 5)"),
        "{out}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ok(&["info", "--json", "--device", "cpu", "-q"])).unwrap();
    assert_eq!(json["device"], "cpu");
    assert_eq!(json["train_images"], 10_000);
    assert_eq!(json["development_only"], true);
    assert!(json["threads"].as_u64().unwrap() >= 1);
}

#[test]
fn info_writes_a_metrics_line_under_out() {
    let dir = Scratch::new("out");
    let out_dir = dir.path().join("run1");
    ok(&["info", "--out", out_dir.to_str().unwrap(), "--quiet"]);
    let text = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["event"], "info");
    assert_eq!(line["dataset"], "fashion-mnist");
}

#[test]
fn info_reads_a_data_directory() {
    let info = |dataset: &str, dir: &std::path::Path| {
        ok(&[
            "info",
            "--dataset",
            dataset,
            "--data-dir",
            dir.to_str().unwrap(),
        ])
    };
    let out = info("fashion-mnist", &common::vendored_dir());
    assert!(out.contains("10000 training images"), "{out}");
    if let Some(shared) = common::shared_data() {
        let out = info("mnist", &shared.join("mnist"));
        assert!(
            out.contains("60000 training images, 10000 test images"),
            "{out}"
        );
    }
}

#[test]
fn impossible_options_fail_clearly() {
    let e = fails(&["info", "--dataset", "cifar10"], 2);
    assert!(
        e.contains("--data-dir") && e.contains("bayesnas fetch cifar10"),
        "{e}"
    );
    let e = fails(&["info", "--dataset", "mnist"], 2);
    assert!(e.contains("--data-dir"), "{e}");
    let e = fails(&["info", "--data-dir", "/definitely/not/here"], 2);
    assert!(e.contains("/definitely/not/here"), "{e}");
    let e = fails(&["info", "--threads", "0"], 2);
    assert!(e.contains("--threads") && e.contains("at least 1"), "{e}");
    let e = fails(&["info", "--threads", "many"], 2);
    assert!(e.contains("--threads"), "{e}");
    // This machine has no GPU (CI): an explicit cuda fails with the reason, never panics.
    if std::env::var("BAYESNAS_REQUIRE_GPU").as_deref() != Ok("1") {
        for dev in ["cuda", "cuda:1"] {
            let e = fails(&["info", "--device", dev], 1);
            assert!(e.contains("CUDA is not available"), "{e}");
            assert!(
                e.contains("no CUDA kernels")
                    || e.contains("driver library")
                    || e.contains("CUDA device"),
                "names the reason: {e}"
            );
            assert!(!e.contains("panicked"), "{e}");
        }
    }
    let e = fails(&["info", "--device", "cuda:x"], 2);
    assert!(e.contains("cuda:N"), "{e}");
    let e = fails(&["info", "--device", "tpu"], 2);
    assert!(e.contains("--device"), "{e}");
    let e = fails(&["info", "--dataset", "imagenet"], 2);
    assert!(e.contains("fashion-mnist"), "lists the choices: {e}");
    // An existing directory without the files names what it looked for.
    let empty = Scratch::new("empty");
    let e = fails(
        &[
            "info",
            "--dataset",
            "cifar10",
            "--data-dir",
            empty.path().to_str().unwrap(),
        ],
        1,
    );
    assert!(e.contains("data_batch_1.bin"), "{e}");
    // A corrupt file is named.
    std::fs::write(empty.path().join("t10k-images-idx3-ubyte"), b"garbage!").unwrap();
    std::fs::write(empty.path().join("t10k-labels-idx1-ubyte"), b"garbage!").unwrap();
    let e = fails(&["info", "--data-dir", empty.path().to_str().unwrap()], 1);
    assert!(
        e.contains("t10k-images-idx3-ubyte") && e.contains("magic"),
        "{e}"
    );
    let e = fails(&["fetch", "mnist", "--mirror", "nonsense", "-q"], 1);
    assert!(e.contains("--mirror"), "{e}");
}

#[test]
fn fetch_through_the_binary() {
    let server = Server::start();
    let dir = Scratch::new("fetch-bin");
    let target = dir.path().join("fashion");
    // A corrupted training-images file: rejected, exit 1, nothing under its final name.
    let vendored = common::vendored_dir();
    let labels = std::fs::read(vendored.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    server.route("train-images-idx3-ubyte.gz", Route::new(labels.clone()));
    let args = [
        "fetch",
        "fashion-mnist",
        "--dir",
        target.to_str().unwrap(),
        "--mirror",
        &server.base,
        "-q",
    ];
    let e = fails(&args, 1);
    assert!(
        e.contains("checksum mismatch") && e.contains("train-images-idx3-ubyte.gz"),
        "{e}"
    );
    assert!(!target.join("train-images-idx3-ubyte.gz").exists());
    assert!(!target.join("train-images-idx3-ubyte.gz.part").exists());

    let Some(shared) = common::shared_data() else {
        eprintln!("skipped the full download: ../shared/data not found");
        return;
    };
    for name in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        let body = std::fs::read(shared.join("fashion-mnist").join(name)).unwrap();
        server.route(name, Route::new(body));
    }
    let out = ok(&args);
    assert!(
        out.contains("train-images-idx3-ubyte.gz: downloaded"),
        "{out}"
    );
    assert!(
        out.contains("60000 training images, 10000 test images"),
        "{out}"
    );
    assert!(out.contains("--data-dir"), "{out}");
    let out = ok(&args);
    assert_eq!(out.matches("already present, verified").count(), 4, "{out}");
    let info = ok(&["info", "--data-dir", target.to_str().unwrap(), "-q"]);
    assert!(info.contains("60000 training images"), "{info}");
}

/// `--device auto` without a usable GPU picks the CPU; a build with kernels says why on
/// stderr, a CPU-only build stays quiet (`info` reports the reason).
#[test]
fn auto_device_falls_back_with_a_note() {
    if std::env::var("BAYESNAS_REQUIRE_GPU").as_deref() == Ok("1") {
        return;
    }
    let out = bayesnas(&["info", "--device", "auto", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let json: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(json["device"], "cpu");
    let cuda = json["cuda"].as_str().unwrap().to_string();
    assert!(cuda.starts_with("unavailable: "), "{cuda}");
    if cuda.contains("no CUDA kernels") {
        assert!(!stderr.contains("note: --device auto"), "{stderr}");
    } else {
        assert!(
            stderr.contains("note: --device auto: using the CPU ("),
            "{stderr}"
        );
    }
    // --quiet silences the note.
    let out = bayesnas(&["info", "--device", "auto", "--json", "-q"]);
    assert!(!text(&out.stderr).contains("note: --device auto"));
}

/// `bench kernels` needs the CUDA device: without one it fails with the reason, no panic.
#[test]
fn bench_kernels_without_gpu_fails_clearly() {
    if std::env::var("BAYESNAS_REQUIRE_GPU").as_deref() == Ok("1") {
        return;
    }
    let e = fails(&["bench", "kernels", "--device", "cuda"], 1);
    assert!(e.contains("CUDA is not available"), "{e}");
    let e = fails(&["bench", "kernels", "--device", "cpu"], 1);
    assert!(e.contains("--device cuda"), "{e}");
}
