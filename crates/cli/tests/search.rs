//! `bayesnas search` and `bayesnas bench step` end to end through the binary.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bayesnas"))
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bayesnas-cli-search-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

const TINY: &[&str] = &[
    "search",
    "--channels",
    "4",
    "--cells",
    "3",
    "--batch",
    "16",
    "--max-batches",
    "3",
    "--curvature-batches",
    "2",
    "--perturb-images",
    "32",
    "--threads",
    "1",
    "--quiet",
];

#[test]
fn tiny_search_writes_every_output_and_resume_reproduces_it() {
    let out = scratch("tiny");
    let o = bin().args(TINY).arg("--out").arg(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("normal cell") && stdout.contains("reduce cell"),
        "{stdout}"
    );
    for f in [
        "genotype.json",
        "relevance.json",
        "normal.svg",
        "reduce.svg",
        "normal.dot",
        "reduce.dot",
        "metrics.jsonl",
        "checkpoint.safetensors",
        "selection.json",
        "perturbation.json",
        "normal_relevance.svg",
        "reduce_relevance.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // the default derivation ranks ops by perturbation, with at most 4 parameter-free ops in
    // the normal cell
    let sel: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("selection.json")).unwrap())
            .unwrap();
    assert_eq!(sel["score"], "perturbation_loss_rise");
    assert_eq!(sel["rules"]["max_param_free"], 4);
    assert_eq!(sel["cheaper_within"], 2.0);
    let geno: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("genotype.json")).unwrap()).unwrap();
    let free = geno["normal"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["ops"].as_array().unwrap().iter())
        .filter(|o| {
            ["max_pool_3x3", "avg_pool_3x3", "skip_connect"].contains(&o["op"].as_str().unwrap())
        })
        .count();
    assert!(free <= 4, "{geno}");
    assert_eq!(sel["normal"]["edges"].as_array().unwrap().len(), 8);
    let g = std::fs::read_to_string(out.join("genotype.json")).unwrap();
    bayesnas_search::Genotype::from_json(&g)
        .unwrap()
        .validate()
        .unwrap();
    let svg = std::fs::read_to_string(out.join("normal.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "{}",
        &svg[..60.min(svg.len())]
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    assert!(
        metrics.lines().filter(|l| l.contains("\"epoch\"")).count() >= 2,
        "{metrics}"
    );

    // resuming a finished run derives the same genotype
    let o2 = bin().args(TINY).arg("--resume").arg(&out).output().unwrap();
    assert!(
        o2.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o2.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("genotype.json")).unwrap(),
        g
    );

    // the same seed gives the same genotype in a fresh directory
    let out3 = scratch("again");
    let o3 = bin().args(TINY).arg("--out").arg(&out3).output().unwrap();
    assert!(o3.status.success());
    assert_eq!(
        std::fs::read_to_string(out3.join("genotype.json")).unwrap(),
        g
    );
    std::fs::remove_dir_all(out).ok();
    std::fs::remove_dir_all(out3).ok();
}

#[test]
fn bad_options_are_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["search", "--space", "nasnet"], "nasnet"),
        (&["search", "--tau", "1.5"], "--tau"),
        (&["search", "--channels", "3"], "--channels"),
        (&["search", "--cells", "2"], "--cells"),
        (&["search", "--batch", "1"], "--batch"),
        (&["search", "--max-param-free", "many"], "--max-param-free"),
        (
            &["search", "--param-free-dropout", "1"],
            "--param-free-dropout",
        ),
        (&["search", "--warmup-steps", "0"], "--warmup-steps"),
        (&["search", "--switch-lr=-1"], "--switch-lr"),
        (&["search", "--perturb-images", "0"], "--perturb-images"),
        (
            &["search", "--resume", "/nonexistent/bayesnas-run"],
            "checkpoint",
        ),
        (&["bench", "step", "--space", "x"], "x"),
    ];
    for (args, needle) in cases {
        let o = bin().args(*args).arg("--quiet").output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn corrupt_checkpoint_is_rejected_without_panic() {
    let out = scratch("corrupt");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("checkpoint.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}",
    )
    .unwrap();
    let o = bin().args(TINY).arg("--resume").arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("checkpoint.safetensors") && !err.contains("panicked"),
        "{err}"
    );
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn bench_step_prints_one_json_line_with_the_documented_keys() {
    let o = bin()
        .args([
            "bench",
            "step",
            "--channels",
            "4",
            "--cells",
            "3",
            "--batch",
            "4",
            "--image",
            "16",
            "--in-channels",
            "1",
            "--steps",
            "2",
            "--threads",
            "1",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    for k in [
        "forward_ms",
        "backward_ms",
        "curvature_ms",
        "update_ms",
        "step_ms",
        "images_per_s",
        "params",
        "switches",
        "peak_mem_mb",
        "host_reads",
        "launches",
    ] {
        assert!(v.get(k).is_some(), "{k} missing in {line}");
    }
    assert!(v["step_ms"].as_f64().unwrap() > 0.0);
    assert!(v["host_reads"].as_f64().unwrap() > 0.0);
    assert!(v["launches"].as_f64().unwrap() > 0.0);
}

/// `TINY` without `--quiet`, so that the report lines can be read.
fn tiny_loud() -> Vec<&'static str> {
    TINY.iter().copied().filter(|a| *a != "--quiet").collect()
}

/// `bayesnas` with `args` and `extra`, then `--resume out`: must succeed; returns its stderr.
fn resume_run(out: &std::path::Path, args: &[&str], extra: &[&str]) -> String {
    let o = bin()
        .args(args)
        .args(extra)
        .arg("--resume")
        .arg(out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    err
}

fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn resumed_derivation_reuses_the_scores_of_its_own_supernet_only() {
    let out = scratch("reuse");
    let o = bin().args(TINY).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pj = out.join("perturbation.json");
    let measured = std::fs::read_to_string(&pj).unwrap();
    // `images` replaces TINY's 32 held-out images.
    let resume = |images: &str, extra: &[&str]| {
        let args: Vec<&str> = tiny_loud()
            .into_iter()
            .map(|a| if a == "32" { images } else { a })
            .collect();
        resume_run(&out, &args, extra)
    };

    // Planted scores with the supernet's own base loss are reused: the derivation reads them.
    let mut planted = read_json(&pj);
    let sel = read_json(&out.join("selection.json"));
    let ops: Vec<String> = sel["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    let edge = &sel["normal"]["edges"][0];
    let (from, to) = (edge["from"].as_str().unwrap(), edge["to"].as_str().unwrap());
    let current_best = edge["op_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .enumerate()
        .fold(
            (0, f64::NEG_INFINITY),
            |b, (i, v)| if v > b.1 { (i, v) } else { b },
        )
        .0;
    let plant = (current_best + 1) % ops.len();
    planted["normal"][0][plant] = serde_json::json!(1e6);
    std::fs::write(&pj, serde_json::to_string(&planted).unwrap()).unwrap();
    let err = resume("32", &[]);
    assert!(err.contains("(reused"), "{err}");
    let sel = read_json(&out.join("selection.json"));
    assert_eq!(sel["normal"]["edges"][0]["op_scores"][plant], 1e6);
    let g = read_json(&out.join("genotype.json"));
    let kept = g["normal"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == from && e["to"] == to)
        .expect("the planted edge is kept");
    assert_eq!(kept["ops"][0]["op"], ops[plant].as_str(), "{g}");

    // A base loss one ulp off (another supernet or held-out set) is measured again.
    let mut stale = read_json(&pj);
    let base = stale["base_loss"].as_f64().unwrap();
    stale["base_loss"] = serde_json::json!(f64::from_bits(base.to_bits() + 1));
    std::fs::write(&pj, serde_json::to_string(&stale).unwrap()).unwrap();
    let err = resume("32", &[]);
    assert!(!err.contains("(reused"), "{err}");
    assert_eq!(std::fs::read_to_string(&pj).unwrap(), measured);

    // So is another number of held-out images.
    let err = resume("16", &[]);
    assert!(!err.contains("(reused"), "{err}");
    assert_eq!(read_json(&pj)["images"], 16);

    // A malformed file is a warning that names it, then the scores are measured again.
    std::fs::write(&pj, b"{\"images\": 32, \"base_loss\": ").unwrap();
    let err = resume("32", &[]);
    assert!(
        err.contains("warning") && err.contains("perturbation.json") && !err.contains("(reused"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&pj).unwrap(), measured);

    // Re-deriving with a cap reuses the measured scores and only changes the cell rules.
    let err = resume("32", &["--max-param-free", "0"]);
    assert!(err.contains("(reused"), "{err}");
    assert_eq!(std::fs::read_to_string(&pj).unwrap(), measured);
    let g = read_json(&out.join("genotype.json"));
    let free = ["max_pool_3x3", "avg_pool_3x3", "skip_connect"];
    for e in g["normal"]["edges"].as_array().unwrap() {
        for o in e["ops"].as_array().unwrap() {
            assert!(!free.contains(&o["op"].as_str().unwrap()), "{g}");
        }
    }
    std::fs::remove_dir_all(out).ok();
}

/// `--cheaper-within`: with an unbounded band every op of an edge is tied with the best, so
/// each edge keeps its cheapest op: a parameter-free one without the cap, and with the cap of
/// 2 the capped edges get the cheapest convolution (dil_conv_3x3); with 0 only exact ties
/// change, so the cell is the one of the plain rises (`none`); no flag is the default's 2.
/// Needs removal scores.
#[test]
fn cheaper_within_keeps_the_cheapest_of_tied_ops() {
    let out = scratch("cheaper");
    let o = bin().args(TINY).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let default = read_json(&out.join("genotype.json"));
    let pj = read_json(&out.join("perturbation.json"));
    assert_eq!(
        pj["normal_se"].as_array().map(|a| a.len()),
        pj["normal"].as_array().map(|a| a.len())
    );
    let ops_of = |g: &serde_json::Value, cell: &str| -> Vec<String> {
        g[cell]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| e["ops"].as_array().unwrap().iter())
            .map(|o| o["op"].as_str().unwrap().to_string())
            .collect()
    };
    let free =
        |op: &String| ["max_pool_3x3", "avg_pool_3x3", "skip_connect"].contains(&op.as_str());
    let rederive = |extra: &[&str]| {
        let err = resume_run(&out, &tiny_loud(), extra);
        assert!(err.contains("(reused"), "{err}");
        read_json(&out.join("genotype.json"))
    };
    let g = rederive(&["--cheaper-within", "1e300", "--max-param-free", "none"]);
    let normal = ops_of(&g, "normal");
    assert!(normal.len() >= 3 && normal.iter().all(free), "{normal:?}");
    assert_eq!(
        read_json(&out.join("selection.json"))["cheaper_within"],
        1e300
    );
    let g = rederive(&["--cheaper-within", "1e300", "--max-param-free", "2"]);
    let normal = ops_of(&g, "normal");
    assert_eq!(normal.iter().filter(|o| free(o)).count(), 2, "{normal:?}");
    assert!(
        normal
            .iter()
            .filter(|o| !free(o))
            .all(|o| o == "dil_conv_3x3"),
        "{normal:?}"
    );
    let plain = rederive(&["--cheaper-within", "none"]);
    assert_eq!(
        read_json(&out.join("selection.json"))["cheaper_within"],
        serde_json::Value::Null
    );
    assert_eq!(rederive(&["--cheaper-within", "0"]), plain);
    assert_eq!(rederive(&[]), default);
    assert_eq!(rederive(&["--cheaper-within", "2"]), default);
    let o = bin()
        .args(TINY)
        .args(["--perturb-mode", "replace", "--cheaper-within", "2"])
        .arg("--out")
        .arg(scratch("cheaper-replace"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--cheaper-within"),
        "{err}"
    );
}
