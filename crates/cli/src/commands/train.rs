//! `bayesnas train`: train a derived architecture in DARTS' evaluation network.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bayesnas_data::{Augment, DatasetKind, Loader, LoaderConfig};
use bayesnas_engine::io::write_atomic;
use bayesnas_engine::prelude::*;
use bayesnas_search::genotype::DARTS_V2;
use bayesnas_search::retrain::network::{EvalConfig, EvalNetwork};
use bayesnas_search::retrain::train::{
    TrainRecord, TrainSettings, Trainer, CHECKPOINT, WEIGHTS_FILE,
};
use bayesnas_search::{Genotype, SearchSpace};
use clap::Args;
use serde::Serialize;

use crate::data::{batches, split_parts};
use crate::error::{CliError, CliResult};
use crate::metrics::MetricsWriter;
use crate::opts::{
    check_at_least_one, check_batch_norm_batch, check_cells, check_channels, check_max_batches,
    check_non_negative, check_positive, check_unit_interval, usage, CommonOpts, SgdOpts,
};
use crate::progress::Progress;

/// Options of `bayesnas train`.
#[derive(Args, Debug, Clone)]
#[command(mut_arg("weight_decay", |a| a.default_value(DEFAULT_WEIGHT_DECAY)))]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: CommonOpts,

    /// The architecture: a genotype.json written by `bayesnas search`, a file holding a DARTS
    /// `Genotype(...)` string, such a string itself, `darts_v2` (DARTS' published cell), or
    /// `random:SEED[:SPACE]` (a random cell of the space, default `bayesnas`: two inputs per
    /// node, one op each, the baseline a search must beat)
    #[arg(long, value_name = "FILE", help_heading = "Network")]
    pub genotype: String,
    /// Number of cells; reductions at 1/3 and 2/3 of the depth
    #[arg(long, default_value_t = 20, value_name = "N", help_heading = "Network")]
    pub cells: usize,
    /// Channels of the first stage (doubled at each reduction; the stem has 3C)
    #[arg(long, default_value_t = 36, value_name = "C", help_heading = "Network")]
    pub channels: usize,
    /// Add DARTS' auxiliary classifier after the second reduction cell (training only; not
    /// counted in the reported parameters)
    #[arg(long, help_heading = "Network")]
    pub auxiliary: bool,
    /// Weight of the auxiliary loss
    #[arg(
        long,
        default_value_t = 0.4,
        value_name = "W",
        help_heading = "Network"
    )]
    pub aux_weight: f32,

    /// Epochs (the cosine schedule and the drop-path ramp span them)
    #[arg(
        long,
        default_value_t = 600,
        value_name = "N",
        help_heading = "Training"
    )]
    pub epochs: usize,
    /// Images per batch
    #[arg(
        long,
        default_value_t = 96,
        value_name = "B",
        help_heading = "Training"
    )]
    pub batch: usize,
    /// Initial learning rate, cosine-annealed per epoch to --lr-min
    #[arg(
        long,
        default_value_t = 0.025,
        value_name = "LR",
        help_heading = "Training"
    )]
    pub lr: f32,
    /// Final learning rate of the cosine schedule
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "LR",
        help_heading = "Training"
    )]
    pub lr_min: f32,
    /// `--momentum`, `--weight-decay` (every trainable tensor, as DARTS).
    #[command(flatten)]
    pub sgd: SgdOpts,
    /// Clip the global gradient norm to this
    #[arg(
        long,
        default_value_t = 5.0,
        value_name = "NORM",
        help_heading = "Training"
    )]
    pub grad_clip: f64,
    /// Drop-path probability of the last epoch, ramped linearly from 0 (0: off)
    #[arg(
        long,
        default_value_t = 0.2,
        value_name = "P",
        help_heading = "Training"
    )]
    pub drop_path: f32,
    /// Cutout square side in pixels (0: off) [default: 16 on CIFAR-10, 0 otherwise]
    #[arg(long, value_name = "PX", help_heading = "Training")]
    pub cutout: Option<usize>,
    /// Fraction of the training data held out for the per-epoch validation
    #[arg(
        long,
        default_value_t = 0.1,
        value_name = "F",
        help_heading = "Training"
    )]
    pub valid_fraction: f64,
    /// Cap on training batches per epoch (quick runs); all batches by default
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub max_batches: Option<usize>,

    /// Continue the run whose checkpoint is DIR/checkpoint.safetensors (or the checkpoint
    /// FILE itself); outputs go to that directory. The options must be the run's
    #[arg(long, value_name = "DIR|FILE", help_heading = "Runtime")]
    pub resume: Option<PathBuf>,
    /// Build the network, print its parameter count as JSON and exit (no training, no files)
    #[arg(long, help_heading = "Runtime")]
    pub params_only: bool,
}

/// `--weight-decay` when not given (DARTS' evaluation setting).
const DEFAULT_WEIGHT_DECAY: &str = "0.0003";

impl TrainArgs {
    /// `--weight-decay`: clap fills in [`DEFAULT_WEIGHT_DECAY`]; arguments built in code
    /// without one get the same value.
    fn weight_decay(&self) -> f32 {
        self.sgd.weight_decay_or(3e-4)
    }

    fn check(&self) -> CliResult<()> {
        check_cells(self.cells)?;
        check_channels(self.channels)?;
        check_batch_norm_batch(self.batch)?;
        check_at_least_one("--epochs", self.epochs)?;
        check_max_batches(self.max_batches)?;
        if !(self.valid_fraction > 0.0 && self.valid_fraction < 1.0) {
            return usage(format!(
                "--valid-fraction {}: must be strictly between 0 and 1",
                self.valid_fraction
            ));
        }
        check_positive("--lr", self.lr)?;
        if !(self.lr_min >= 0.0 && self.lr_min <= self.lr) {
            return usage(format!(
                "--lr-min {}: must be between 0 and --lr",
                self.lr_min
            ));
        }
        check_unit_interval("--momentum", self.sgd.momentum)?;
        check_non_negative("--weight-decay", self.weight_decay())?;
        check_positive("--grad-clip", self.grad_clip)?;
        check_unit_interval("--drop-path", self.drop_path)?;
        check_non_negative("--aux-weight", self.aux_weight)?;
        if let (Some(r), Some(o)) = (&self.resume, &self.common.runtime.out) {
            if resume_dir(r) != *o {
                return usage(
                    "--resume continues in the checkpoint's directory: do not also give a different --out"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// The directory of a `--resume` argument (the folder itself, or a checkpoint file's folder).
fn resume_dir(r: &Path) -> PathBuf {
    if r.is_file() || r.extension().is_some_and(|e| e == "safetensors") {
        r.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    } else {
        r.to_path_buf()
    }
}

/// Reads `--genotype`: a file (genotype JSON or a DARTS string), a DARTS string, or
/// `darts_v2`.
pub fn load_genotype(arg: &str) -> CliResult<Genotype> {
    let usage = |m: String| CliError::Usage(format!("--genotype {arg}: {m}"));
    let trimmed = arg.trim();
    if let Some(rest) = trimmed.strip_prefix("random:") {
        // random:SEED or random:SEED:SPACE
        let (seed, space) = rest.split_once(':').unwrap_or((rest, "bayesnas"));
        let seed: u64 = seed
            .parse()
            .map_err(|_| usage(format!("'{seed}' is not a seed (random:SEED[:SPACE])")))?;
        let space = SearchSpace::by_name(space).map_err(|e| usage(e.to_string()))?;
        return Ok(bayesnas_search::random_cell::random_genotype(&space, seed));
    }
    let text = if trimmed.starts_with("Genotype(") {
        trimmed.to_string()
    } else if trimmed.eq_ignore_ascii_case("darts_v2") && !Path::new(arg).exists() {
        DARTS_V2.to_string()
    } else {
        std::fs::read_to_string(arg).map_err(|e| usage(e.to_string()))?
    };
    let t = text.trim_start();
    let g = if t.starts_with('{') {
        Genotype::from_json(t)
    } else {
        Genotype::from_darts_string(t.trim_end())
    }
    .map_err(|e| usage(e.to_string()))?;
    g.validate().map_err(|e| usage(e.to_string()))?;
    Ok(g)
}

/// `result.json`.
#[derive(Serialize)]
struct TrainResult<'a> {
    test_accuracy: f64,
    test_loss: f64,
    test_set: &'a str,
    params: usize,
    aux_params: usize,
    val_accuracy: Option<f64>,
    epochs: usize,
    seconds: f64,
    device: String,
    dataset: &'a str,
    config: &'a EvalConfig,
    settings: &'a TrainSettings,
    batch: usize,
    cutout: usize,
    genotype: serde_json::Value,
    darts_genotype: Option<String>,
    weights: &'a str,
}

/// Runs `bayesnas train`.
pub fn run(args: &TrainArgs) -> CliResult<()> {
    args.check()?;
    let genotype = load_genotype(&args.genotype)?;
    if let Some(r) = &args.resume {
        let ck = if r.is_dir() {
            r.join(CHECKPOINT)
        } else {
            r.clone()
        };
        if !ck.is_file() {
            return Err(CliError::Usage(format!(
                "--resume {}: no checkpoint there (expected {})",
                r.display(),
                ck.display()
            )));
        }
    }
    let (rt, source) = args.common.setup()?;
    let out = args
        .resume
        .as_deref()
        .map(resume_dir)
        .or_else(|| rt.out.clone())
        .unwrap_or_else(|| PathBuf::from("runs/train"));
    std::fs::create_dir_all(&out).map_err(CliError::io(&out))?;
    let quiet = rt.quiet;

    let ds = Arc::clone(&source.train);
    let [in_c, image, _] = ds.image_shape();
    let parts = split_parts(&source, args.valid_fraction, rt.seed)?;
    let cutout = args
        .cutout
        .unwrap_or(if source.kind == DatasetKind::Cifar10 {
            16
        } else {
            0
        });
    if cutout > image {
        return Err(CliError::Usage(format!(
            "--cutout {cutout}: larger than the {image}x{image} images"
        )));
    }
    let mut augment: Augment = source.kind.default_augment();
    augment.cutout = cutout;
    let train_loader = Loader::new(
        Arc::clone(&ds),
        parts.train.clone(),
        LoaderConfig::train(args.batch, augment, rt.seed.wrapping_add(11)),
    )?;
    let eval_batch = args.batch.max(100);
    let valid_loader = Loader::new(
        Arc::clone(&ds),
        parts.valid.clone(),
        LoaderConfig::eval(eval_batch),
    )?;
    let test_loader = Loader::new(
        Arc::clone(&parts.test_set),
        parts.test.clone(),
        LoaderConfig::eval(eval_batch),
    )?;
    let steps = train_loader
        .batches_per_epoch()
        .min(args.max_batches.unwrap_or(usize::MAX));
    if steps == 0 {
        return Err(CliError::Usage(format!(
            "the training part ({} images) has no complete batch of {}: lower --batch",
            parts.train.len(),
            args.batch
        )));
    }

    let config = EvalConfig {
        channels: args.channels,
        cells: args.cells,
        in_channels: in_c,
        image,
        classes: ds.num_classes(),
        auxiliary: args.auxiliary,
    };
    let settings = TrainSettings {
        epochs: args.epochs,
        lr: args.lr,
        lr_min: args.lr_min,
        momentum: args.sgd.momentum,
        weight_decay: args.weight_decay(),
        grad_clip: args.grad_clip,
        drop_path: args.drop_path,
        aux_weight: args.aux_weight,
        seed: rt.seed,
    };
    let mut store = ParamStore::new();
    let net = EvalNetwork::new(
        config.clone(),
        &genotype,
        &mut store,
        &mut Rng::new(rt.seed),
    )
    .map_err(|e| match e {
        Error::Invalid(m) => CliError::Usage(m),
        other => CliError::Engine(other),
    })?;
    let params = EvalNetwork::param_count(&store);
    let aux_params = EvalNetwork::aux_param_count(&store);
    if args.params_only {
        println!(
            "{}",
            serde_json::json!({ "params": params, "aux_params": aux_params, "genotype": genotype.to_darts_string() })
        );
        return Ok(());
    }
    let mut trainer = Trainer::new(net, store, settings.clone(), rt.device)?;
    if let Some(r) = &args.resume {
        let ck = if r.is_dir() {
            r.join(CHECKPOINT)
        } else {
            r.clone()
        };
        trainer
            .load_checkpoint(&ck)
            .map_err(|e| CliError::Usage(format!("--resume: cannot continue: {e}")))?;
        if !quiet {
            eprintln!(
                "resuming {} after epoch {}",
                ck.display(),
                trainer.epochs_done
            );
        }
    }
    let checkpoint = out.join(CHECKPOINT);
    if !quiet {
        eprintln!(
            "evaluation network: {} cells, C={}, {} parameters ({:.3} M){}; {} on {} with {} threads; \
             {} train / {} validation / {} test images ({})",
            args.cells,
            args.channels,
            params,
            params as f64 / 1e6,
            if args.auxiliary {
                format!(" + {aux_params} in the auxiliary head")
            } else {
                String::new()
            },
            source.kind.display_name(),
            rt.device,
            rt.threads,
            parts.train.len(),
            parts.valid.len(),
            parts.test.len(),
            parts.test_origin,
        );
    }

    let mut metrics = MetricsWriter::create(&out).map_err(CliError::io(&out))?;
    let mrec = |m: &mut MetricsWriter, event: &str, v: serde_json::Value| {
        m.record(event, &v)
            .map_err(CliError::io(out.join(crate::metrics::FILE_NAME)))
    };
    mrec(
        &mut metrics,
        "train_start",
        serde_json::json!({
            "params": params, "aux_params": aux_params, "config": config, "settings": settings,
            "batch": args.batch, "cutout": cutout, "resumed_after": trainer.epochs_done,
            "darts_genotype": genotype.to_darts_string(), "device": rt.device.to_string(),
            "threads": rt.threads,
        }),
    )?;
    let start = Instant::now();
    while !trainer.finished() {
        let epoch = trainer.epochs_done;
        let lr = settings.lr_at(epoch);
        let dp = settings.drop_path_at(epoch);
        let mut bar = Progress::new(
            steps as u64,
            &format!("{}/{}", epoch + 1, settings.epochs),
            quiet,
        );
        let mut it = batches(&train_loader, epoch as u64, args.max_batches)?;
        let (train_loss, train_acc, ips) = trainer
            .train_epoch(&mut it, &mut |_, loss, acc, n| {
                bar.step(n, Some(loss), Some(acc))
            })?;
        drop(it);
        let mut vit = batches(&valid_loader, 0, None)?;
        let (val_loss, val_acc) = trainer.evaluate(&mut vit)?;
        drop(vit);
        let rec = TrainRecord {
            epoch,
            lr,
            drop_path: dp,
            train_loss,
            train_accuracy: train_acc,
            val_loss,
            val_accuracy: val_acc,
            images_per_s: ips,
        };
        bar.clear();
        if !quiet {
            eprintln!(
                "epoch {}/{}: lr {lr:.5} drop-path {dp:.3}, train loss {train_loss:.4} acc {:.2}%, \
                 validation loss {val_loss:.4} acc {:.2}%, {ips:.0} img/s",
                epoch + 1,
                settings.epochs,
                100.0 * train_acc,
                100.0 * val_acc
            );
        }
        mrec(
            &mut metrics,
            "epoch",
            serde_json::to_value(&rec).unwrap_or_default(),
        )?;
        trainer.finish_epoch(rec);
        trainer.save_checkpoint(&checkpoint)?;
    }

    let mut tit = batches(&test_loader, 0, None)?;
    let (test_loss, test_acc) = trainer.evaluate(&mut tit)?;
    drop(tit);
    let weights = out.join(WEIGHTS_FILE);
    trainer.save_weights(&weights)?;
    let seconds = start.elapsed().as_secs_f64();
    let result = TrainResult {
        test_accuracy: test_acc,
        test_loss,
        test_set: parts.test_origin,
        params,
        aux_params,
        val_accuracy: trainer.history.last().map(|h| h.val_accuracy),
        epochs: trainer.epochs_done,
        seconds,
        device: rt.device.to_string(),
        dataset: source.kind.name(),
        config: &config,
        settings: &settings,
        batch: args.batch,
        cutout,
        genotype: serde_json::from_str(&genotype.to_json().map_err(bayesnas_search::Error::from)?)
            .unwrap_or_default(),
        darts_genotype: genotype.to_darts_string(),
        weights: WEIGHTS_FILE,
    };
    let json = serde_json::to_string_pretty(&result).unwrap_or_default();
    write_atomic(&out.join("result.json"), json.as_bytes())?;
    mrec(
        &mut metrics,
        "train_end",
        serde_json::json!({ "test_accuracy": test_acc, "test_loss": test_loss, "seconds": seconds }),
    )?;
    println!(
        "trained {} epochs in {seconds:.1} s: {params} parameters ({:.3} M, auxiliary head excluded)",
        trainer.epochs_done,
        params as f64 / 1e6
    );
    if let Some(h) = trainer.history.last() {
        println!(
            "validation accuracy {:.2}% (loss {:.4})",
            100.0 * h.val_accuracy,
            h.val_loss
        );
    }
    println!(
        "test accuracy {:.2}% (loss {test_loss:.4}) on the {}",
        100.0 * test_acc,
        parts.test_origin
    );
    println!(
        "outputs in {}: result.json {WEIGHTS_FILE} {CHECKPOINT} metrics.jsonl",
        out.display()
    );
    Ok(())
}
