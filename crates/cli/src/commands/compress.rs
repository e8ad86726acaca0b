//! `bayesnas compress`: structured Bayesian compression of LeNet-300-100 / LeNet-5 on MNIST.

use std::collections::HashMap;
use std::path::PathBuf;

use bayesnas_data::{DataSource, DatasetKind};
use bayesnas_engine::io::write_atomic;
use bayesnas_search::compress::{
    structure_string, AugmentPolicy, CompressData, CompressSettings, Compressor, Event,
    Granularity, Model, PenaltyMode,
};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::data::{split_parts, CompressFeed};
use crate::error::{CliError, CliResult};
use crate::metrics::MetricsWriter;
use crate::opts::{
    check_at_least_one, check_max_batches, check_unit_interval, usage, RuntimeOpts, SgdOpts,
};
use crate::progress::Progress;

/// `--model` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// Fully connected 784-300-100-10
    #[value(name = "lenet-300-100")]
    Lenet300100,
    /// LeNet-5-Caffe: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10
    Lenet5,
}

impl From<ModelArg> for Model {
    fn from(m: ModelArg) -> Model {
        match m {
            ModelArg::Lenet300100 => Model::Lenet300100,
            ModelArg::Lenet5 => Model::Lenet5,
        }
    }
}

/// `--dataset` values of `compress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompressDataset {
    /// MNIST (the benchmark)
    Mnist,
    /// Fashion-MNIST
    #[value(name = "fashion-mnist")]
    FashionMnist,
}

/// `--augment` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AugmentArg {
    /// Never
    None,
    /// In the final fine-tune only (pruning decisions see the plain images)
    Finetune,
    /// In every epoch
    All,
}

impl From<AugmentArg> for AugmentPolicy {
    fn from(a: AugmentArg) -> AugmentPolicy {
        match a {
            AugmentArg::None => AugmentPolicy::None,
            AugmentArg::Finetune => AugmentPolicy::Finetune,
            AugmentArg::All => AugmentPolicy::All,
        }
    }
}

/// `--penalty` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PenaltyArg {
    /// Group soft thresholding after each SGD step (exact zeros, stable)
    Prox,
    /// The penalty's gradient added to the weight gradients
    Gradient,
}

impl From<PenaltyArg> for PenaltyMode {
    fn from(p: PenaltyArg) -> PenaltyMode {
        match p {
            PenaltyArg::Prox => PenaltyMode::Proximal,
            PenaltyArg::Gradient => PenaltyMode::Gradient,
        }
    }
}

impl From<PenaltyMode> for PenaltyArg {
    fn from(p: PenaltyMode) -> PenaltyArg {
        match p {
            PenaltyMode::Proximal => PenaltyArg::Prox,
            PenaltyMode::Gradient => PenaltyArg::Gradient,
        }
    }
}

/// Options of `bayesnas compress`. An option left out takes its value from
/// [`CompressSettings::for_model`]; the defaults every model shares are clap defaults (from
/// the same constants) and show as such in `--help`.
#[derive(Args, Debug, Clone)]
#[command(mut_arg("weight_decay", |a| a.help("Weight decay [default: 5e-4]")))]
pub struct CompressArgs {
    /// Network to compress
    #[arg(long, value_enum, help_heading = "Model")]
    pub model: ModelArg,

    /// Data set
    #[arg(long, value_enum, default_value_t = CompressDataset::Mnist, value_name = "NAME", help_heading = "Data")]
    pub dataset: CompressDataset,
    /// Directory with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
    /// t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] (`bayesnas fetch mnist`)
    #[arg(long, value_name = "DIR", help_heading = "Data")]
    pub data_dir: PathBuf,
    /// Fraction of the training data held out for validation after each loop (0: none,
    /// train on all of it)
    #[arg(long, default_value_t = CompressSettings::VALID_FRACTION, value_name = "F", help_heading = "Data")]
    pub valid_fraction: f64,
    /// When to train on random crops (2-pixel padding) of the images [default: finetune]
    #[arg(long, value_enum, value_name = "WHEN", help_heading = "Data")]
    pub augment: Option<AugmentArg>,
    /// Zero padding on each side before the random crop back to 28x28 (the largest shift in
    /// pixels) [default: lenet-300-100 2, lenet5 1]
    #[arg(long, value_name = "P", help_heading = "Data")]
    pub crop_padding: Option<usize>,

    /// Group-lasso strength: one value, or one per layer separated by commas (fc1,fc2,fc3
    /// or conv1,conv2,fc1,fc2) [default: lenet-300-100 0.185,0.0075,0.03; lenet5
    /// 0.15,0.01,0.018,0.01]
    #[arg(
        long,
        value_name = "L[,L..]",
        value_delimiter = ',',
        help_heading = "Bayesian compression"
    )]
    pub lambda: Option<Vec<f64>>,
    /// Prune groups whose prior variance gamma falls under this [default: 1e-6]
    #[arg(long, value_name = "T", help_heading = "Bayesian compression")]
    pub threshold: Option<f64>,
    /// Loops of (training, curvature, closed-form update, pruning) [default: lenet-300-100 4,
    /// lenet5 16]
    #[arg(long, value_name = "L", help_heading = "Bayesian compression")]
    pub loops: Option<usize>,
    /// Training epochs per loop [default: lenet-300-100 2, lenet5 1]
    #[arg(long, value_name = "N", help_heading = "Bayesian compression")]
    pub epochs_per_loop: Option<usize>,
    /// Epochs without penalty before the loops; their curvature sets the first omega and
    /// gamma (0: start from omega = gamma = 1) [default: lenet-300-100 0, lenet5 1]
    #[arg(long, value_name = "N", help_heading = "Bayesian compression")]
    pub warmup_epochs: Option<usize>,
    /// Loops of the weight-level phase after the group loops: one epoch without penalty,
    /// then N loops of the same update with every weight its own group; weights whose gamma
    /// collapses are held at zero (0: no weight-level phase) [default: lenet-300-100 0,
    /// lenet5 4]
    #[arg(long, value_name = "N", help_heading = "Bayesian compression")]
    pub weight_loops: Option<usize>,
    /// Lambda of the weight-level phase: one value, or one per layer [default: lenet-300-100
    /// 0.01, lenet5 0.003]
    #[arg(
        long,
        value_name = "L[,L..]",
        value_delimiter = ',',
        help_heading = "Bayesian compression"
    )]
    pub weight_lambda: Option<Vec<f64>>,
    /// Curvature is averaged over the last K batches of each loop
    #[arg(
        long,
        default_value_t = CompressSettings::CURVATURE_BATCHES,
        value_name = "K",
        help_heading = "Bayesian compression"
    )]
    pub curvature_batches: usize,
    /// How the group-lasso penalty acts on the weights
    #[arg(long, value_enum, default_value_t = CompressSettings::PENALTY.into(), help_heading = "Bayesian compression")]
    pub penalty: PenaltyArg,

    /// Epochs of the final fine-tune of the pruned network (no penalty) [default:
    /// lenet-300-100 100, lenet5 80]
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub finetune_epochs: Option<usize>,
    /// Images per batch
    #[arg(
        long,
        default_value_t = CompressSettings::BATCH,
        value_name = "B",
        help_heading = "Training"
    )]
    pub batch: usize,
    /// Learning rate during the loops (constant) [default: 0.05]
    #[arg(long, value_name = "LR", help_heading = "Training")]
    pub lr: Option<f32>,
    /// Initial learning rate of the fine-tune, cosine-annealed to 0 [default: lenet-300-100
    /// --lr, lenet5 0.02]
    #[arg(long, value_name = "LR", help_heading = "Training")]
    pub finetune_lr: Option<f32>,
    /// `--momentum` (its default, 0.9, is [`CompressSettings::MOMENTUM`]), `--weight-decay`.
    #[command(flatten)]
    pub sgd: SgdOpts,
    /// Weight decay of the fine-tune [default: --weight-decay]
    #[arg(long, value_name = "WD", help_heading = "Training")]
    pub finetune_weight_decay: Option<f32>,
    /// Cap on training batches per epoch (quick runs); all batches by default
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub max_batches: Option<usize>,

    #[command(flatten)]
    pub runtime: RuntimeOpts,
}

impl CompressArgs {
    /// The settings: every option given, the rest from [`CompressSettings::for_model`]
    /// (the fine-tune's learning rate and weight decay relative to `--lr` and
    /// `--weight-decay` as [`CompressSettings::for_model_with`] relates them).
    fn settings(&self, seed: u64) -> CliResult<CompressSettings> {
        let model: Model = self.model.into();
        let defaults = CompressSettings::for_model(model);
        let lr = self.lr.unwrap_or(defaults.lr);
        let weight_decay = self.sgd.weight_decay_or(defaults.weight_decay);
        let d = CompressSettings::for_model_with(model, lr, weight_decay);
        let s = CompressSettings {
            lambda: self.lambda.clone().unwrap_or(d.lambda),
            threshold: self.threshold.unwrap_or(d.threshold),
            loops: self.loops.unwrap_or(d.loops),
            epochs_per_loop: self.epochs_per_loop.unwrap_or(d.epochs_per_loop),
            warmup_epochs: self.warmup_epochs.unwrap_or(d.warmup_epochs),
            finetune_epochs: self.finetune_epochs.unwrap_or(d.finetune_epochs),
            lr,
            finetune_lr: self.finetune_lr.unwrap_or(d.finetune_lr),
            momentum: self.sgd.momentum,
            weight_decay,
            finetune_weight_decay: self
                .finetune_weight_decay
                .unwrap_or(d.finetune_weight_decay),
            curvature_batches: self.curvature_batches,
            penalty: self.penalty.into(),
            seed,
            weight_loops: self.weight_loops.unwrap_or(d.weight_loops),
            weight_lambda: self.weight_lambda.clone().unwrap_or(d.weight_lambda),
            batch: self.batch,
            augment: self.augment.map_or(d.augment, AugmentPolicy::from),
            crop_padding: self.crop_padding.unwrap_or(d.crop_padding),
            valid_fraction: self.valid_fraction,
            max_batches: self.max_batches.or(d.max_batches),
        };
        let layers = model.original_structure().len();
        for (flag, v) in [
            ("--lambda", &s.lambda),
            ("--weight-lambda", &s.weight_lambda),
        ] {
            if v.len() != 1 && v.len() != layers {
                return usage(format!(
                    "{flag}: give one value or {layers} (one per layer of {model}), got {}",
                    v.len()
                ));
            }
        }
        check_at_least_one("--loops", s.loops)?;
        check_at_least_one("--epochs-per-loop", s.epochs_per_loop)?;
        check_at_least_one("--curvature-batches", s.curvature_batches)?;
        if s.crop_padding > 14 {
            return usage(format!(
                "--crop-padding {}: at most 14 (half the image)",
                s.crop_padding
            ));
        }
        check_at_least_one("--batch", s.batch)?;
        check_max_batches(s.max_batches)?;
        check_unit_interval("--valid-fraction", s.valid_fraction)?;
        s.validate()
            .map_err(|e| CliError::Usage(format!("invalid settings: {e}")))?;
        Ok(s)
    }
}

/// Appends one record to `metrics.jsonl`.
fn record<T: Serialize>(m: &mut MetricsWriter, event: &str, v: &T) -> CliResult<()> {
    let path = m.path().to_path_buf();
    m.record(event, v).map_err(CliError::io(path))
}

/// `report.json`.
#[derive(Serialize)]
struct Report<'a> {
    model: &'a str,
    /// Test error in percent.
    test_error: f64,
    test_loss: f64,
    test_set: &'a str,
    /// Surviving units per layer (see `original_structure`).
    structure: Vec<usize>,
    original_structure: Vec<usize>,
    structure_change: String,
    /// Non-zero weights of the pruned network over the weights of the original one
    /// (biases not counted).
    nonzero_fraction: f64,
    nonzero_weights: usize,
    total_weights: usize,
    reference: serde_json::Value,
    seconds: f64,
    device: String,
    threads: usize,
    settings: &'a CompressSettings,
    batch: usize,
    augment: AugmentPolicy,
    crop_padding: usize,
    /// The rounds' records as JSON objects (keys in sorted order, as in `metrics.jsonl`).
    loops: &'a [serde_json::Value],
    pruned_model: &'a str,
}

/// Runs `bayesnas compress`.
pub fn run(args: &CompressArgs) -> CliResult<()> {
    let settings = args.settings(args.runtime.seed)?;
    if !args.data_dir.is_dir() {
        return Err(CliError::Usage(format!(
            "--data-dir {}: no such directory",
            args.data_dir.display()
        )));
    }
    let rt = args.runtime.setup()?;
    let kind = match args.dataset {
        CompressDataset::Mnist => DatasetKind::Mnist,
        CompressDataset::FashionMnist => DatasetKind::FashionMnist,
    };
    let source = DataSource::open(kind, &args.data_dir)?;
    let model: Model = args.model.into();
    let out = rt
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/compress"));
    std::fs::create_dir_all(&out).map_err(CliError::io(&out))?;
    let quiet = rt.quiet;

    let parts = if settings.valid_fraction > 0.0 {
        split_parts(&source, settings.valid_fraction, rt.seed)?
    } else {
        // no validation: all training images train; the test set as split_parts gives it
        let mut p = split_parts(&source, 0.1, rt.seed)?;
        p.train.append(&mut p.valid);
        p.train.sort_unstable();
        p
    };
    let mut feed = CompressFeed::new(&source, kind, &parts, &settings, rt.seed)?;
    if feed.train_batches() == 0 {
        return Err(CliError::Usage(format!(
            "the training part ({} images) has no complete batch of {}: lower --batch",
            parts.train.len(),
            settings.batch
        )));
    }

    let mut comp = Compressor::new(model, settings.clone(), rt.device)?;
    let (_, total_weights) = comp.net.nonzero_weights(&comp.store);
    let list = |v: &[f64]| {
        v.iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    if !quiet {
        eprintln!(
            "compressing {model} ({} weights, structure {}) on {} ({} train / {} validation / {} test images), {} with {} threads; lambda {}, threshold {}, {} loops x {} epochs{} + {} fine-tune epochs",
            total_weights,
            structure_string(&model.original_structure()),
            kind.display_name(),
            parts.train.len(),
            parts.valid.len(),
            parts.test.len(),
            rt.device,
            rt.threads,
            list(&settings.lambda),
            settings.threshold,
            settings.loops,
            settings.epochs_per_loop,
            if settings.weight_loops > 0 {
                format!(
                    " + {} weight-level loops (lambda {})",
                    settings.weight_loops,
                    list(&settings.weight_lambda)
                )
            } else {
                String::new()
            },
            settings.finetune_epochs,
        );
    }
    let mut metrics = MetricsWriter::create(&out).map_err(CliError::io(&out))?;
    record(
        &mut metrics,
        "compress_start",
        &serde_json::json!({ "model": model.name(), "settings": settings, "batch": settings.batch,
            "augment": settings.augment, "crop_padding": settings.crop_padding, "device": rt.device.to_string(), "threads": rt.threads }),
    )?;

    let mut bar: Option<Progress> = None;
    let mut observe = |event: Event| -> CliResult<()> {
        match event {
            Event::EpochStart {
                epoch,
                epochs,
                phase,
                batches,
            } => {
                bar = Some(Progress::new(
                    batches as u64,
                    &format!("{}/{} {phase}", epoch + 1, epochs),
                    quiet,
                ));
            }
            Event::Step {
                loss,
                accuracy,
                images,
                ..
            } => {
                if let Some(b) = bar.as_mut() {
                    b.step(images, Some(loss), Some(accuracy));
                }
            }
            Event::TrainingDone => {
                if let Some(b) = bar.take() {
                    b.clear();
                }
            }
            Event::EpochEnd {
                record: r,
                epochs,
                seconds,
            } => {
                if !quiet {
                    eprintln!(
                        "epoch {}/{epochs} ({}): lr {:.4}, loss {:.4}, penalty {:.4}, train acc {:.2}%{}, {:.0} img/s, structure {}, {:.0} s",
                        r.epoch + 1,
                        r.phase,
                        r.lr,
                        r.train_loss,
                        r.penalty,
                        100.0 * r.train_accuracy,
                        r.val_accuracy.map_or(String::new(), |a| format!(", validation acc {:.2}%", 100.0 * a)),
                        r.images_per_s,
                        structure_string(&r.structure),
                        seconds
                    );
                }
                record(&mut metrics, "epoch", r)?;
            }
            Event::RoundEnd {
                label,
                record: r,
                nonzero_weights,
                total_weights,
            } => {
                if !quiet {
                    let summary = &r.summary;
                    eprintln!(
                        "{label}: pruned {} -> structure {} ({:.2}% non-zero weights)",
                        summary
                            .layers
                            .iter()
                            .map(|u| format!("{} {}", u.layer, u.pruned))
                            .collect::<Vec<_>>()
                            .join(", "),
                        structure_string(&summary.structure),
                        100.0 * nonzero_weights as f64 / total_weights as f64
                    );
                    for u in &summary.layers {
                        eprintln!(
                            "  {}: {} {}, gamma min {:.3e} median {:.3e} max {:.3e}, omega median {:.3e}",
                            u.layer,
                            u.groups,
                            if r.granularity == Granularity::Weight { "weights" } else { "groups" },
                            u.gamma_min,
                            u.gamma_median,
                            u.gamma_max,
                            u.omega_median
                        );
                    }
                }
                record(&mut metrics, "loop", r)?;
            }
        }
        Ok(())
    };
    let result = comp.run(&mut feed, &mut observe);
    if let Some(b) = bar.take() {
        b.clear();
    }
    let outcome = result?;

    let structure = &outcome.structure;
    let original = model.original_structure();
    let (ref_name, ref_structure, ref_error, ref_nonzero) = model.reference();
    let pruned_path = out.join("pruned.safetensors");
    let metadata = HashMap::from([
        ("format".to_string(), "bayesnas-compressed".to_string()),
        ("model".to_string(), model.name().to_string()),
        ("structure".to_string(), structure_string(structure)),
        (
            "layout".to_string(),
            "{layer}.weight/.bias of the shrunk layers (conv [out, in, k, k], linear [out, in]); \
             kept.{boundary}: original indices of surviving units; {fc}.input_index: gather \
             x.flatten(1)[:, input_index.long()] before that layer"
                .to_string(),
        ),
    ]);
    comp.save_pruned(&pruned_path, &metadata)?;
    let test_error = outcome.test_error();
    let (nonzero, total, seconds) = (
        outcome.nonzero_weights,
        outcome.total_weights,
        outcome.seconds,
    );
    let loops: Vec<serde_json::Value> = outcome
        .loops
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect();
    let report = Report {
        model: model.name(),
        test_error,
        test_loss: outcome.test_loss,
        test_set: parts.test_origin,
        structure: structure.clone(),
        original_structure: original.clone(),
        structure_change: format!(
            "{} -> {}",
            structure_string(&original),
            structure_string(structure)
        ),
        nonzero_fraction: nonzero as f64 / total as f64,
        nonzero_weights: nonzero,
        total_weights: total,
        reference: serde_json::json!({ "method": format!("Louizos et al. 2017, {ref_name}"),
            "structure": ref_structure, "test_error": ref_error, "nonzero_percent": ref_nonzero }),
        seconds,
        device: rt.device.to_string(),
        threads: rt.threads,
        settings: &settings,
        batch: settings.batch,
        augment: settings.augment,
        crop_padding: settings.crop_padding,
        loops: &loops,
        pruned_model: "pruned.safetensors",
    };
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    write_atomic(&out.join("report.json"), json.as_bytes())?;
    record(
        &mut metrics,
        "compress_end",
        &serde_json::json!({ "test_error": test_error, "structure": structure,
            "nonzero_fraction": nonzero as f64 / total as f64, "seconds": seconds }),
    )?;

    println!("{model} compressed in {seconds:.1} s");
    println!("test error: {test_error:.2}% ({})", parts.test_origin);
    println!(
        "structure: {} -> {}",
        structure_string(&original),
        structure_string(structure)
    );
    println!(
        "non-zero weights: {nonzero} of {total} ({:.3}%)",
        100.0 * nonzero as f64 / total as f64
    );
    println!(
        "reference (Louizos et al. 2017, {ref_name}): {ref_error}% error, {}, {ref_nonzero}% non-zero",
        structure_string(&ref_structure)
    );
    println!(
        "outputs in {}: report.json pruned.safetensors metrics.jsonl",
        out.display()
    );
    Ok(())
}
