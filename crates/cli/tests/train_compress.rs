//! `bayesnas train` and `bayesnas compress` through the binary: a short training run on the
//! vendored Fashion-MNIST learns, outputs are written, bad input gives clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bayesnas"))
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bayesnas-cli-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A tiny DARTS_V2 network (3 cells, C=8) trained for 300 steps of 32 images on the
/// built-in Fashion-MNIST set: a broken forward or backward pass stays near 10%.
#[test]
fn short_training_on_fashion_mnist_beats_chance_by_far() {
    let out = scratch("fashion");
    let o = bin()
        .args([
            "train",
            "--genotype",
            "darts_v2",
            "--cells",
            "3",
            "--channels",
            "8",
            "--epochs",
            "2",
            "--max-batches",
            "150",
            "--batch",
            "32",
            "--lr",
            "0.05",
            "--drop-path",
            "0.1",
            "--quiet",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("test accuracy"), "{stdout}");
    let r = json(&out.join("result.json"));
    let test = r["test_accuracy"].as_f64().unwrap();
    let val = r["val_accuracy"].as_f64().unwrap();
    assert!(val > 0.5 && test > 0.5, "validation {val}, test {test}");
    assert!(r["params"].as_u64().unwrap() > 5_000);
    let g = bayesnas_search::Genotype::from_json_value(&r["genotype"]).unwrap();
    assert_eq!(
        g,
        bayesnas_search::Genotype::from_darts_string(bayesnas_search::genotype::DARTS_V2).unwrap()
    );
    assert_eq!(r["epochs"], 2);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "epoch")
        .collect();
    assert_eq!(epochs.len(), 2, "{metrics}");
    assert!(epochs[1]["train_loss"].as_f64().unwrap() < 2.0);
    assert!(epochs[1]["drop_path"].as_f64().unwrap() > 0.0);
    assert!(out.join("weights.safetensors").is_file());
    assert!(out.join("checkpoint.safetensors").is_file());
    std::fs::remove_dir_all(out).ok();
}

const TINY: &[&str] = &[
    "train",
    "--cells",
    "3",
    "--epochs",
    "1",
    "--max-batches",
    "2",
    "--batch",
    "8",
    "--quiet",
];

/// Runs `bayesnas` with [`TINY`], then `args`, then `last` (a path).
fn tiny_train(args: &[&str], last: impl AsRef<std::ffi::OsStr>) -> Output {
    bin().args(TINY).args(args).arg(last).output().unwrap()
}

#[test]
fn bad_genotypes_options_and_checkpoints_are_clear_errors() {
    let dir = scratch("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let g = bayesnas_search::Genotype::from_darts_string(bayesnas_search::genotype::DARTS_V2)
        .unwrap()
        .to_json()
        .unwrap();
    let unknown_op = dir.join("unknown_op.json");
    std::fs::write(&unknown_op, g.replacen("dil_conv_3x3", "conv_9x9", 1)).unwrap();
    let bad_node = dir.join("bad_node.json");
    std::fs::write(&bad_node, g.replacen("\"n1\"", "\"n9\"", 1)).unwrap();
    let darts_bad = dir.join("darts.txt");
    std::fs::write(
        &darts_bad,
        bayesnas_search::genotype::DARTS_V2.replacen(
            "('dil_conv_3x3', 2)",
            "('dil_conv_3x3', 7)",
            1,
        ),
    )
    .unwrap();
    let p = |p: &PathBuf| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--genotype".into(), p(&unknown_op)], "conv_9x9"),
        (vec!["--genotype".into(), p(&bad_node)], "n9"),
        (vec!["--genotype".into(), p(&darts_bad)], "7"),
        (
            vec!["--genotype".into(), "/nonexistent/genotype.json".into()],
            "/nonexistent/genotype.json",
        ),
        (
            vec![
                "--genotype".into(),
                "darts_v2".into(),
                "--cells".into(),
                "2".into(),
            ],
            "--cells",
        ),
        (
            vec![
                "--genotype".into(),
                "darts_v2".into(),
                "--channels".into(),
                "5".into(),
            ],
            "--channels",
        ),
        (
            vec![
                "--genotype".into(),
                "darts_v2".into(),
                "--drop-path".into(),
                "1.5".into(),
            ],
            "--drop-path",
        ),
        (
            vec![
                "--genotype".into(),
                "darts_v2".into(),
                "--resume".into(),
                "/nonexistent/run".into(),
            ],
            "no checkpoint",
        ),
    ];
    for (args, needle) in &cases {
        let mut cmd = bin();
        cmd.args(TINY).args(args);
        if !args.iter().any(|a| a == "--channels") {
            cmd.args(["--channels", "4"]);
        }
        let o = cmd.output().unwrap();
        let (_, err) = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }

    // our own genotype.json (a search's output format) trains
    let own = dir.join("genotype.json");
    std::fs::write(&own, &g).unwrap();
    let o = tiny_train(
        &[
            "--channels",
            "4",
            "--genotype",
            own.to_str().unwrap(),
            "--out",
        ],
        dir.join("own"),
    );
    assert!(o.status.success(), "{}", text(&o).1);

    // a checkpoint of a C=4 network cannot continue a C=6 run
    let run = dir.join("run");
    let o = tiny_train(
        &["--channels", "4", "--genotype", "darts_v2", "--out"],
        &run,
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let ck = run.join("checkpoint.safetensors");
    let o = tiny_train(
        &["--genotype", "darts_v2", "--channels", "6", "--resume"],
        &ck,
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("checkpoint.safetensors")
            && err.contains("shape")
            && !err.contains("panicked"),
        "{err}"
    );
    // resuming a finished run with the same options re-reports it
    let o = tiny_train(
        &["--channels", "4", "--genotype", "darts_v2", "--resume"],
        &run,
    );
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(json(&run.join("result.json"))["test_accuracy"].is_number());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn help_lists_the_options() {
    let train: &[&str] = &[
        "--genotype",
        "--cells",
        "--channels",
        "--auxiliary",
        "--drop-path",
        "--cutout",
        "--epochs",
        "--resume",
        "--device",
    ];
    let compress: &[&str] = &[
        "--model",
        "lenet-300-100",
        "lenet5",
        "--data-dir",
        "--loops",
        "--lambda",
        "--threshold",
        "--device",
    ];
    for (command, wants) in [("train", train), ("compress", compress)] {
        let o = bin().args([command, "--help"]).output().unwrap();
        let (h, _) = text(&o);
        for want in wants {
            assert!(h.contains(want), "{command} --help lacks {want}:\n{h}");
        }
    }
}

fn mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mnist")
}

#[test]
fn compress_smoke_run_writes_a_report() {
    let data = mnist();
    if !data.is_dir() {
        eprintln!("skipped: no MNIST at {}", data.display());
        return;
    }
    // a short LeNet-300-100 run, plus `extra` options
    let short_run = |out: &Path, extra: &[&str]| {
        bin()
            .args([
                "compress",
                "--model",
                "lenet-300-100",
                "--loops",
                "1",
                "--epochs-per-loop",
                "1",
                "--finetune-epochs",
                "1",
                "--max-batches",
                "20",
                "--curvature-batches",
                "5",
                "--lambda",
                "1e-3",
                "--threshold",
                "1e-3",
                "--quiet",
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(&data)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = scratch("compress");
    let o = short_run(&out, &[]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("784-300-100 ->"), "{stdout}");
    let r = json(&out.join("report.json"));
    let err = r["test_error"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&err), "{err}");
    assert!(err < 50.0, "20+20 batches should learn something: {err}%");
    let s: Vec<u64> = r["structure"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(s.len(), 3);
    assert!(s[0] < 784, "border pixels are pruned: {s:?}");
    let f = r["nonzero_fraction"].as_f64().unwrap();
    assert!(f > 0.0 && f < 1.0, "{f}");
    assert!(out.join("pruned.safetensors").is_file());

    // the same run with a weight-level phase: the same group loops, then single weights go
    let out_w = scratch("compress-weights");
    let o = short_run(&out_w, &["--weight-loops", "1", "--weight-lambda", "0.05"]);
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let rw = json(&out_w.join("report.json"));
    let loops = rw["loops"].as_array().unwrap();
    assert_eq!(loops.len(), 3, "group loop, weight warm-up, weight loop");
    assert_eq!(loops[2]["granularity"], "weight");
    let (nz, nz_w) = (
        r["nonzero_weights"].as_u64().unwrap(),
        rw["nonzero_weights"].as_u64().unwrap(),
    );
    assert!(
        nz_w < nz,
        "the weight-level phase pruned nothing: {nz_w} vs {nz}"
    );
    let err_w = rw["test_error"].as_f64().unwrap();
    assert!(err_w < 50.0, "{err_w}%");
    std::fs::remove_dir_all(out_w).ok();

    // bad options
    for (args, needle) in [
        (vec!["compress", "--model", "lenet7"], "lenet7"),
        (
            vec![
                "compress",
                "--model",
                "lenet5",
                "--data-dir",
                "/nonexistent",
            ],
            "/nonexistent",
        ),
        (
            vec![
                "compress",
                "--model",
                "lenet5",
                "--loops",
                "0",
                "--data-dir",
                ".",
            ],
            "--loops",
        ),
        (
            vec![
                "compress",
                "--model",
                "lenet5",
                "--lambda=-1",
                "--data-dir",
                ".",
            ],
            "lambda",
        ),
        (
            vec![
                "compress",
                "--model",
                "lenet5",
                "--weight-lambda",
                "0.1,0.2",
                "--data-dir",
                ".",
            ],
            "--weight-lambda",
        ),
        (
            vec![
                "compress",
                "--model",
                "lenet5",
                "--weight-loops",
                "2",
                "--weight-lambda=0",
                "--data-dir",
                ".",
            ],
            "weight lambda",
        ),
        (
            vec![
                "compress",
                "--model",
                "lenet5",
                "--crop-padding",
                "20",
                "--data-dir",
                ".",
            ],
            "--crop-padding",
        ),
    ] {
        let o = bin().args(&args).output().unwrap();
        let (_, e) = text(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            e.contains(needle) && !e.contains("panicked"),
            "{args:?}: {e}"
        );
    }
    std::fs::remove_dir_all(out).ok();
}

/// The `[default: ...]` texts of `compress --help` name the values of
/// `CompressSettings::for_model`.
#[test]
fn compress_help_names_the_for_model_defaults() {
    use bayesnas_search::compress::{AugmentPolicy, CompressSettings, Model};
    let o = bin().args(["compress", "--help"]).output().unwrap();
    let (h, _) = text(&o);
    let help = h.split_whitespace().collect::<Vec<_>>().join(" ");
    // the text in brackets after `flag`'s `[default: `
    let default_of = |flag: &str| -> String {
        let at = help
            .find(&format!("{flag} <"))
            .unwrap_or_else(|| panic!("{flag}"));
        let rest = &help[at..];
        let start = rest.find("[default: ").unwrap() + "[default: ".len();
        rest[start..start + rest[start..].find(']').unwrap()].to_string()
    };
    // "lenet-300-100 A, lenet5 B" (or `;`) -> (A, B)
    let per_model = |flag: &str| -> (String, String) {
        let d = default_of(flag);
        let (a, b) = d
            .strip_prefix("lenet-300-100 ")
            .and_then(|r| r.split_once(" lenet5 "))
            .unwrap_or_else(|| panic!("{flag}: {d}"));
        (a.trim_end_matches([',', ';']).to_string(), b.to_string())
    };
    let floats = |v: &str| -> Vec<f64> { v.split(',').map(|x| x.parse().unwrap()).collect() };
    let (a, b) = (
        CompressSettings::for_model(Model::Lenet300100),
        CompressSettings::for_model(Model::Lenet5),
    );
    let (la, lb) = per_model("--lambda");
    assert_eq!(
        (floats(&la), floats(&lb)),
        (a.lambda.clone(), b.lambda.clone())
    );
    let (wa, wb) = per_model("--weight-lambda");
    assert_eq!(
        (floats(&wa), floats(&wb)),
        (a.weight_lambda.clone(), b.weight_lambda.clone())
    );
    for (flag, get) in [
        (
            "--loops",
            (|s: &CompressSettings| s.loops) as fn(&CompressSettings) -> usize,
        ),
        ("--epochs-per-loop", |s| s.epochs_per_loop),
        ("--warmup-epochs", |s| s.warmup_epochs),
        ("--weight-loops", |s| s.weight_loops),
        ("--finetune-epochs", |s| s.finetune_epochs),
        ("--crop-padding", |s| s.crop_padding),
    ] {
        let (x, y) = per_model(flag);
        assert_eq!((x, y), (get(&a).to_string(), get(&b).to_string()), "{flag}");
    }
    let (fa, fb) = per_model("--finetune-lr");
    assert_eq!((fa.as_str(), a.finetune_lr), ("--lr", a.lr));
    assert_eq!(fb.parse::<f32>().unwrap(), b.finetune_lr);
    for s in [&a, &b] {
        assert_eq!(
            default_of("--threshold").parse::<f64>().unwrap(),
            s.threshold
        );
        assert_eq!(default_of("--lr").parse::<f32>().unwrap(), s.lr);
        assert_eq!(
            default_of("--weight-decay").parse::<f32>().unwrap(),
            s.weight_decay
        );
        assert_eq!(default_of("--finetune-weight-decay"), "--weight-decay");
        assert_eq!(s.finetune_weight_decay, s.weight_decay);
        assert_eq!(default_of("--momentum").parse::<f32>().unwrap(), s.momentum);
        assert_eq!(default_of("--batch").parse::<usize>().unwrap(), s.batch);
        assert_eq!(
            default_of("--curvature-batches").parse::<usize>().unwrap(),
            s.curvature_batches
        );
        assert_eq!(
            default_of("--valid-fraction").parse::<f64>().unwrap(),
            s.valid_fraction
        );
        assert_eq!(default_of("--augment"), "finetune");
        assert_eq!(s.augment, AugmentPolicy::Finetune);
        assert_eq!(default_of("--penalty"), "prox");
    }
}
